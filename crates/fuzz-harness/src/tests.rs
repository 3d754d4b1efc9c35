//! The harness on planted bugs: it must find them, write them down and say where.

use super::*;

/// A fresh directory under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "signalbox-fuzz-harness-{name}-{}-{}",
        std::process::id(),
        clock_seed()
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn corpus(dir: &Path, target: &str, inputs: &[&[u8]]) {
    let d = dir.join("corpus").join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i}")), input).expect("seed file");
    }
}

fn settings(seconds: f64) -> Settings {
    Settings {
        budget: Duration::from_secs_f64(seconds),
        seed: 42,
        found: false,
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "(no message)".into())
}

#[test]
fn a_planted_bug_is_found_written_and_shrunk() {
    let dir = scratch("find");
    corpus(&dir, "planted", &[b"hello world"]);
    let failures = dir.join("failures");
    let outcome = std::panic::catch_unwind(|| {
        Fuzz::new("planted", &dir, &failures)
            .settings(settings(20.0))
            .run(|input, _| {
                if input.windows(2).any(|w| w == b"\xff\xfe") {
                    return Err(format!("planted: {} bytes", input.len()));
                }
                Ok(())
            })
    });
    let message = panic_text(outcome.expect_err("the planted bug is found"));
    assert!(
        message.contains("fuzz target `planted` failed"),
        "{message}"
    );
    assert!(message.contains("seed 42"), "{message}");
    let shrunk = std::fs::read_dir(failures.join("planted"))
        .expect("failures written")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with("-min.bin"))
        .expect("a shrunk input");
    assert_eq!(std::fs::read(shrunk.path()).expect("readable"), b"\xff\xfe");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_corpus_input_fails_the_replay_and_names_its_file() {
    let dir = scratch("replay");
    corpus(&dir, "t", &[b"ok", b"bad"]);
    let outcome = std::panic::catch_unwind(|| {
        Fuzz::new("t", &dir, dir.join("failures"))
            .settings(settings(0.0))
            .run(|input, _| {
                assert_ne!(input, b"bad", "bad input");
                Ok(())
            })
    });
    let message = panic_text(outcome.expect_err("the replay fails"));
    assert!(message.contains("replaying"), "{message}");
    assert!(message.contains("seed-1"), "{message}");
    assert!(message.contains("panic at"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn found_inputs_are_replayed_only_when_asked() {
    let dir = scratch("found");
    corpus(&dir, "t", &[b"ok"]);
    let found = dir.join("found").join("t");
    std::fs::create_dir_all(&found).expect("found directory");
    std::fs::write(found.join("bug"), b"bad").expect("found file");
    let target = |input: &[u8], _: &mut Features| {
        if input == b"bad" {
            Err("bad: found".to_owned())
        } else {
            Ok(())
        }
    };
    let report = Fuzz::new("t", &dir, dir.join("failures"))
        .settings(settings(0.0))
        .run(target);
    assert_eq!((report.replayed, report.executions), (1, 0));
    let with_found = Settings {
        found: true,
        ..settings(0.0)
    };
    let outcome = std::panic::catch_unwind(|| {
        Fuzz::new("t", &dir, dir.join("failures"))
            .settings(with_found)
            .run(target)
    });
    assert!(outcome.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inputs_with_new_features_join_the_pool() {
    let dir = scratch("features");
    corpus(&dir, "t", &[b"a"]);
    let report = Fuzz::new("t", &dir, dir.join("failures"))
        .settings(settings(0.3))
        .run(|input, features| {
            features.add(input.len() as u64);
            Ok(())
        });
    assert!(report.pool > 5, "{report}");
    assert!(report.executions > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_seed_is_read_in_decimal_or_hex() {
    assert_eq!(parse_seed("123"), Some(123));
    assert_eq!(parse_seed(" 0xff "), Some(255));
    assert_eq!(parse_seed("x"), None);
}
