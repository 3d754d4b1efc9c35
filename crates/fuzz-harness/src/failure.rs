//! What happens around one execution and after a failing one: panics are caught and turned
//! into messages (without printing them while the fuzzer shrinks), a failing input is written
//! to a file, and a smaller input failing the same way is searched for within a time bound.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

thread_local! {
    /// Set while this thread runs a fuzz target: its panics are recorded, not printed.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records the panics of fuzzing threads and
/// hands every other panic to the hook that was there before, so other tests print as usual.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(a panic without a message)".to_owned());
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_else(|| "an unknown place".to_owned());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("panic at {at}: {message}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an `Err` that says where it happened.
pub(crate) fn catching(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    install_hook();
    CAPTURING.with(|c| c.set(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(false));
    match outcome {
        Ok(result) => result,
        Err(_) => Err(LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic".to_owned())),
    }
}

/// The part of a failure message that names the kind of failure: up to the first `": "`
/// (a panic's location, or an invariant's name). Shrinking keeps inputs of the same kind.
pub(crate) fn kind(message: &str) -> &str {
    let first_line = message.lines().next().unwrap_or("");
    first_line.split(": ").next().unwrap_or(first_line)
}

/// Writes `input` to `dir/<target>-<hash>.bin` and returns the path.
pub(crate) fn write_input(dir: &Path, target: &str, input: &[u8], suffix: &str) -> PathBuf {
    let path = dir.join(format!("{target}-{:016x}{suffix}.bin", fnv(input)));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, input));
    if let Err(e) = written {
        panic!("cannot write the failing input to {}: {e}", path.display());
    }
    path
}

/// FNV-1a: names failure files after their content, and mixes target names into seeds.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Most time and attempts spent looking for a smaller failing input.
const SHRINK_TIME: Duration = Duration::from_secs(5);
const SHRINK_ATTEMPTS: usize = 5000;

/// A smaller input that still fails with a message of the same [`kind`], found by deleting
/// ranges and zeroing bytes. Returns it with its message.
pub(crate) fn shrink(
    input: &[u8],
    message: &str,
    run: impl FnMut(&[u8]) -> Result<(), String>,
) -> (Vec<u8>, String) {
    let mut s = Shrinker {
        wanted: kind(message).to_owned(),
        best: input.to_vec(),
        message: message.to_owned(),
        attempts: 0,
        deadline: Instant::now() + SHRINK_TIME,
        run,
    };
    // Cut lengths halve down to 16 bytes, then take every length below: a structured input's
    // records have sizes of their own, and a record goes only when a cut matches it exactly.
    // Cuts start at every offset, and the passes repeat while they make progress.
    loop {
        let before = s.best.len();
        let mut chunk = (s.best.len() / 2).max(1);
        loop {
            let mut at = 0;
            while at + chunk <= s.best.len() {
                if s.exhausted() {
                    return (s.best, s.message);
                }
                let mut candidate = s.best.clone();
                candidate.drain(at..at + chunk);
                if !s.try_candidate(candidate) {
                    at += 1;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk = if chunk > 16 { chunk / 2 } else { chunk - 1 };
        }
        if s.best.len() == before {
            break;
        }
    }
    for at in 0..s.best.len() {
        if s.exhausted() {
            break;
        }
        if s.best[at] != 0 {
            let mut candidate = s.best.clone();
            candidate[at] = 0;
            s.try_candidate(candidate);
        }
    }
    (s.best, s.message)
}

/// The state of one [`shrink`].
struct Shrinker<F> {
    wanted: String,
    best: Vec<u8>,
    message: String,
    attempts: usize,
    deadline: Instant,
    run: F,
}

impl<F: FnMut(&[u8]) -> Result<(), String>> Shrinker<F> {
    fn exhausted(&self) -> bool {
        self.attempts >= SHRINK_ATTEMPTS || Instant::now() > self.deadline
    }

    /// Keeps `candidate` when it fails the same way; says whether it did.
    fn try_candidate(&mut self, candidate: Vec<u8>) -> bool {
        self.attempts += 1;
        match (self.run)(&candidate) {
            Err(m) if kind(&m) == self.wanted => {
                self.best = candidate;
                self.message = m;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_message_with_its_location() {
        let r = catching(|| panic!("boom {}", 7));
        let m = r.expect_err("the panic is an error");
        assert!(m.starts_with("panic at "), "{m}");
        assert!(m.contains("failure.rs") && m.ends_with(": boom 7"), "{m}");
        assert_eq!(catching(|| Ok(())), Ok(()));
        assert_eq!(catching(|| Err("no".into())), Err("no".to_owned()));
    }

    #[test]
    fn the_kind_of_a_failure_is_what_precedes_its_details() {
        assert_eq!(kind("quota: user alice has 3"), "quota");
        assert_eq!(
            kind("panic at src/a.rs:1:2: overflow"),
            "panic at src/a.rs:1:2"
        );
        assert_eq!(kind("plain"), "plain");
    }

    #[test]
    fn shrinking_keeps_the_failure_and_drops_what_it_does_not_need() {
        let input = b"aaaaXbbbbbbbbYcccc".to_vec();
        let fails = |i: &[u8]| {
            if i.contains(&b'X') && i.contains(&b'Y') {
                Err(format!("both: {} bytes", i.len()))
            } else {
                Ok(())
            }
        };
        let (small, message) = shrink(&input, "both: 18 bytes", fails);
        assert_eq!(small, b"XY");
        assert_eq!(message, "both: 2 bytes");
    }
}
