//! Fuzzing that runs on the stable toolchain, inside `cargo test`.
//!
//! cargo-fuzz needs a nightly compiler; this harness needs nothing but std. A target is a
//! function of `&[u8]` that returns `Err` (or panics) when an invariant breaks. [`Fuzz::run`]
//! first replays the target's committed corpus (`fuzz/corpus/<target>/`, every file one input),
//! then mutates inputs at random until its time budget is spent. There is no coverage
//! instrumentation: a target may report [`Features`] of what an input did (a response code, a
//! parser error kind), and inputs that show a feature not seen before join the pool that
//! mutations start from, so the search still moves past the first check of a protocol.
//!
//! Settings come from the environment:
//! - `SIGNALBOX_FUZZ_SECONDS` — random-phase budget per target (default
//!   [`DEFAULT_SECONDS`]; `0` replays the corpus only);
//! - `SIGNALBOX_FUZZ_SEED` — the seed of the random phase (default: from the clock; it is
//!   printed, and named in every failure, so a run can be repeated);
//! - `SIGNALBOX_FUZZ_FOUND=1` — also replay `fuzz/found/<target>/`, the inputs that found
//!   bugs not fixed yet (left out of the normal run so it stays green while they are open).
//!
//! A failing input is written to a file, shrunk to a smaller one failing the same way, and the
//! test panics naming both files, the seed and the failure. A target that does not return
//! within [`HANG_SECONDS`] ends the process with the same report: a hang is a failure too.

mod failure;
mod mutate;
mod reader;
mod rng;

use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use reader::Reader;
pub use rng::Rng;

/// Seconds of random mutation per target in a normal test run.
pub const DEFAULT_SECONDS: f64 = 3.0;
/// Seconds one execution may take before it counts as a hang.
pub const HANG_SECONDS: u64 = 20;
/// Most inputs the random phase keeps to mutate from (the corpus included).
const POOL_MAX: usize = 512;

/// How a run is configured, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Random-phase budget per target.
    pub budget: Duration,
    /// Seed of the random phase.
    pub seed: u64,
    /// Whether `fuzz/found/<target>/` is replayed too.
    pub found: bool,
}

impl Settings {
    /// Reads `SIGNALBOX_FUZZ_SECONDS`, `SIGNALBOX_FUZZ_SEED` and `SIGNALBOX_FUZZ_FOUND`.
    /// Panics on a value that does not parse: a typo must not quietly run something else.
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let seconds = match var("SIGNALBOX_FUZZ_SECONDS") {
            None => DEFAULT_SECONDS,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or_else(|| {
                    panic!("SIGNALBOX_FUZZ_SECONDS={v:?}: expected a number of seconds")
                }),
        };
        let seed = match var("SIGNALBOX_FUZZ_SEED") {
            None => clock_seed(),
            Some(v) => parse_seed(&v)
                .unwrap_or_else(|| panic!("SIGNALBOX_FUZZ_SEED={v:?}: expected a number")),
        };
        let found = var("SIGNALBOX_FUZZ_FOUND").is_some_and(|v| v != "0");
        Settings {
            budget: Duration::from_secs_f64(seconds),
            seed,
            found,
        }
    }
}

fn parse_seed(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Short enough to type; different for targets started in the same nanosecond elsewhere.
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000_000
}

/// What an execution did, as the target describes it: inputs that show something new are kept
/// for further mutation.
#[derive(Debug, Default)]
pub struct Features {
    seen: Vec<u64>,
}

impl Features {
    /// Records one feature (any number that names an outcome, e.g. a response code).
    pub fn add(&mut self, feature: u64) {
        self.seen.push(feature);
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// The seed of the random phase.
    pub seed: u64,
    /// Corpus inputs replayed.
    pub replayed: usize,
    /// Random executions.
    pub executions: u64,
    /// Time of the random phase.
    pub elapsed: Duration,
    /// Inputs in the pool at the end (corpus plus kept mutations).
    pub pool: usize,
}

impl Report {
    /// Random executions per second.
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz {}: replayed {} inputs, then {} random executions in {:.1} s ({:.0}/s), \
             seed {}, {} inputs kept",
            self.target,
            self.replayed,
            self.executions,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.seed,
            self.pool,
        )
    }
}

/// A readable account of an input, for failure reports.
pub type Describe<'a> = &'a dyn Fn(&[u8]) -> String;

/// A mutation that knows the input's structure (e.g. inserts or drops a whole operation).
pub type Mutator<'a> = &'a dyn Fn(&mut Rng, &mut Vec<u8>);

/// One fuzz target's run, configured by its builder methods and started by [`Fuzz::run`].
pub struct Fuzz<'a> {
    name: &'a str,
    fuzz_dir: PathBuf,
    failures_dir: PathBuf,
    max_len: usize,
    dictionary: &'a [&'a [u8]],
    describe: Option<Describe<'a>>,
    mutator: Option<Mutator<'a>>,
    settings: Settings,
}

impl<'a> Fuzz<'a> {
    /// The target `name`, its corpus under `fuzz_dir/corpus/<name>/`; failing inputs are
    /// written under `failures_dir`. Settings come from [`Settings::from_env`].
    pub fn new(name: &'a str, fuzz_dir: impl AsRef<Path>, failures_dir: impl AsRef<Path>) -> Self {
        Fuzz {
            name,
            fuzz_dir: std::fs::canonicalize(fuzz_dir.as_ref())
                .unwrap_or_else(|_| fuzz_dir.as_ref().to_path_buf()),
            failures_dir: failures_dir.as_ref().to_path_buf(),
            max_len: 4096,
            dictionary: &[],
            describe: None,
            mutator: None,
            settings: Settings::from_env(),
        }
    }

    /// Longest input the mutations make (default 4096 bytes).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// Tokens the mutations insert (keywords, delimiters) for text formats.
    pub fn dictionary(mut self, tokens: &'a [&'a [u8]]) -> Self {
        self.dictionary = tokens;
        self
    }

    /// A readable account of an input (e.g. the operations it decodes to), added to the report
    /// of a failure.
    pub fn describe(mut self, describe: Describe<'a>) -> Self {
        self.describe = Some(describe);
        self
    }

    /// A structure-aware mutation, used for half of the random inputs (byte-level mutations
    /// make the other half).
    pub fn mutator(mut self, mutator: Mutator<'a>) -> Self {
        self.mutator = Some(mutator);
        self
    }

    /// Overrides the settings read from the environment.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Replays the corpus, then mutates for the budget. Panics on the first failure, naming
    /// the file its input was written to; otherwise returns what it did (also printed).
    pub fn run<F>(self, target: F) -> Report
    where
        F: Fn(&[u8], &mut Features) -> Result<(), String>,
    {
        let seed = self.settings.seed;
        eprintln!(
            "fuzz {}: seed {seed} (SIGNALBOX_FUZZ_SEED={seed} repeats this run)",
            self.name
        );
        let watch = Watch::start(self.name, &self.failures_dir);
        let mut seen = HashSet::new();
        let mut exec = |input: &[u8]| -> Result<bool, String> {
            watch.enter(input);
            let mut features = Features::default();
            failure::catching(|| target(input, &mut features))?;
            let mut new = false;
            for f in features.seen {
                new |= seen.insert(f);
            }
            Ok(new)
        };

        let mut pool = Vec::new();
        let mut replay = self.load("corpus", true);
        if self.settings.found {
            replay.extend(self.load("found", false));
        }
        let replayed = replay.len();
        for (path, input) in replay {
            if let Err(message) = exec(&input) {
                let how = format!("replaying {}", path.display());
                self.fail(&input, &message, &how, &watch, &target);
            }
            pool.push(input);
        }

        let mut rng = Rng::new(seed ^ failure::fnv(self.name.as_bytes()));
        let seeds = pool.len();
        let start = Instant::now();
        let mut executions = 0u64;
        while start.elapsed() < self.settings.budget {
            let mut input = if pool.is_empty() || rng.one_in(64) {
                Vec::new()
            } else {
                pool[rng.below(pool.len())].clone()
            };
            match self.mutator {
                Some(structured) if rng.one_in(2) => {
                    structured(&mut rng, &mut input);
                    input.truncate(self.max_len);
                }
                _ => mutate::mutate(&mut rng, &mut input, &pool, self.dictionary, self.max_len),
            }
            executions += 1;
            match exec(&input) {
                Ok(false) => {}
                Ok(true) if pool.len() < POOL_MAX => pool.push(input),
                Ok(true) => {
                    let at = seeds + rng.below(pool.len() - seeds);
                    pool[at] = input;
                }
                Err(message) => {
                    let how = format!("random execution {executions} (seed {seed})");
                    self.fail(&input, &message, &how, &watch, &target);
                }
            }
        }
        watch.stop();
        let report = Report {
            target: self.name.to_owned(),
            seed,
            replayed,
            executions,
            elapsed: start.elapsed(),
            pool: pool.len(),
        };
        eprintln!("{report}");
        report
    }

    /// The inputs under `fuzz_dir/<kind>/<target>/`, in file-name order.
    fn load(&self, kind: &str, required: bool) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = self.fuzz_dir.join(kind).join(self.name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(_) if !required => return Vec::new(),
            Err(e) => panic!(
                "fuzz target {}: cannot read {}: {e}",
                self.name,
                dir.display()
            ),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        assert!(
            !required || !paths.is_empty(),
            "fuzz target {}: no seed inputs in {}",
            self.name,
            dir.display()
        );
        paths
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
                (p, bytes)
            })
            .collect()
    }

    /// Writes the failing input and a shrunk one, then panics with the report.
    fn fail<F>(&self, input: &[u8], message: &str, how: &str, watch: &Watch, target: &F) -> !
    where
        F: Fn(&[u8], &mut Features) -> Result<(), String>,
    {
        let dir = self.failures_dir.join(self.name);
        let path = failure::write_input(&dir, self.name, input, "");
        let (small, small_message) = failure::shrink(input, message, |candidate| {
            watch.enter(candidate);
            failure::catching(|| target(candidate, &mut Features::default()))
        });
        watch.stop();
        let small_path = failure::write_input(&dir, self.name, &small, "-min");
        let described = self
            .describe
            .map(|d| {
                let text = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d(&small)))
                    .unwrap_or_else(|_| "(describing it panicked too)".into());
                format!("\nThe shrunk input decodes to:\n{text}")
            })
            .unwrap_or_default();
        panic!(
            "fuzz target `{name}` failed on {how}:\n{message}\n\
             input ({len} bytes): {path}\n\
             shrunk ({small_len} bytes, fails with: {small_message}): {small_path}\n\
             Keep it as a regression input: copy it into fuzz/found/{name}/ while the bug is \
             open (SIGNALBOX_FUZZ_FOUND=1 replays those), into fuzz/corpus/{name}/ once fixed.\
             {described}",
            name = self.name,
            len = input.len(),
            path = path.display(),
            small_len = small.len(),
            small_path = small_path.display(),
        );
    }
}

/// Keeps a target's committed seeds equal to the code that builds them. With
/// `SIGNALBOX_FUZZ_WRITE_SEEDS=1` it writes each `(file name, bytes)` to
/// `fuzz_dir/corpus/<target>/`; otherwise it panics when one is missing or differs, so a
/// change to a message format cannot leave the corpus replaying stale inputs.
pub fn check_seeds(fuzz_dir: impl AsRef<Path>, target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = fuzz_dir.as_ref().join("corpus").join(target);
    if std::env::var("SIGNALBOX_FUZZ_WRITE_SEEDS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        for (name, bytes) in seeds {
            let path = dir.join(name);
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        return;
    }
    let stale: Vec<&str> = seeds
        .iter()
        .filter(|(name, bytes)| std::fs::read(dir.join(name)).ok().as_ref() != Some(bytes))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        stale.is_empty(),
        "fuzz target {target}: seeds missing or out of date in {}: {stale:?}; \
         rewrite them with SIGNALBOX_FUZZ_WRITE_SEEDS=1 and this test",
        dir.display()
    );
}

/// Notices a target that stops returning: the fuzzing thread reports each execution, and a
/// watcher thread ends the process with the stuck input written to a file.
struct Watch {
    shared: Arc<WatchShared>,
}

struct WatchShared {
    executions: AtomicU64,
    done: AtomicBool,
    current: Mutex<Vec<u8>>,
}

impl Watch {
    fn start(name: &str, failures_dir: &Path) -> Watch {
        let shared = Arc::new(WatchShared {
            executions: AtomicU64::new(0),
            done: AtomicBool::new(false),
            current: Mutex::new(Vec::new()),
        });
        let (watched, name, dir) = (shared.clone(), name.to_owned(), failures_dir.join(name));
        std::thread::spawn(move || {
            let (mut last, mut since) = (0, Instant::now());
            while !watched.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let now = watched.executions.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(HANG_SECONDS) {
                    let input = watched
                        .current
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let path = failure::write_input(&dir, &name, &input, "-hang");
                    let _ = writeln!(
                        std::io::stderr(),
                        "fuzz target `{name}` did not return within {HANG_SECONDS} s \
                         (a hang): input written to {}",
                        path.display()
                    );
                    std::process::exit(101);
                }
            }
        });
        Watch { shared }
    }

    fn enter(&self, input: &[u8]) {
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        current.clear();
        current.extend_from_slice(input);
        drop(current);
        self.shared.executions.fetch_add(1, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.shared.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
