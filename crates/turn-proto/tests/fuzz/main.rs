//! Stable fuzz targets for the TURN core and its stream framing (see `fuzz/README.md`): each
//! replays `fuzz/corpus/<target>/`, then mutates for `SIGNALBOX_FUZZ_SECONDS`.

mod deframer;
mod turn_core;

use signalbox_fuzz_harness::{check_seeds, Fuzz};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");
const FAILURES: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/fuzz-failures");

#[test]
fn turn_core() {
    Fuzz::new("turn_core", FUZZ_DIR, FAILURES)
        .max_len(2048)
        .describe(&turn_core::describe)
        .mutator(&turn_core::mutate)
        .run(turn_core::target);
}

#[test]
fn stream_deframer() {
    Fuzz::new("stream_deframer", FUZZ_DIR, FAILURES)
        .max_len(4096)
        .run(deframer::target);
}

#[test]
fn the_committed_seeds_are_the_ones_built_here() {
    check_seeds(FUZZ_DIR, "turn_core", &turn_core::seeds());
    check_seeds(FUZZ_DIR, "stream_deframer", &deframer::seeds());
}

/// Seeds that never got past authentication would leave the fuzzer knocking at the door.
#[test]
fn the_turn_core_seeds_allocate_and_relay_on_every_path() {
    let mut all = Vec::new();
    for (name, input) in turn_core::seeds() {
        let stats = turn_core::stats(&input).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert!(stats.allocations > 0, "seed {name} allocates nothing");
        all.push(stats);
    }
    let sum = |f: fn(&turn_core::Stats) -> u64| all.iter().map(f).sum::<u64>();
    assert!(sum(|s| s.to_peer) > 0, "no packet reached a peer");
    assert!(
        sum(|s| s.to_client_data) > 0,
        "no peer data reached a client"
    );
    assert!(sum(|s| s.forwarded) > 0, "no packet crossed workers");
    assert!(sum(|s| s.stream_frames) > 0, "no stream frame");
    let codes: std::collections::BTreeSet<u16> =
        all.iter().flat_map(|s| s.codes.iter().copied()).collect();
    for code in [
        200, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508,
    ] {
        assert!(
            codes.contains(&code),
            "no seed is answered {code}: {codes:?}"
        );
    }
}

/// Prints what a TURN core input does, operation by operation: the files named by
/// `SIGNALBOX_FUZZ_INPUT` (a file or a directory, relative to the workspace), or every seed.
#[test]
#[ignore = "a tool: run with --ignored --nocapture"]
fn describe_turn_core_inputs() {
    let inputs: Vec<(String, Vec<u8>)> = match std::env::var("SIGNALBOX_FUZZ_INPUT") {
        Ok(path) => {
            // Tests run in the crate's directory; a relative path means the workspace's.
            let path =
                std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(path);
            let files = match std::fs::read_dir(&path) {
                Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(_) => vec![path],
            };
            files
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(&f)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
                    (f.display().to_string(), bytes)
                })
                .collect()
        }
        Err(_) => turn_core::seeds()
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect(),
    };
    for (name, input) in inputs {
        println!("=== {name}\n{}\n", turn_core::describe(&input));
    }
}
