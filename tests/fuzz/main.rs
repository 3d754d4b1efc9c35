//! Stable fuzz targets for the server's parsers of untrusted input (see `fuzz/README.md`): the
//! one-port demux classifier, the signaling message parser, invitation-token verification and
//! the HTTP API's query parsing, the Socket.IO WebSocket guard's frame follower. Each replays `fuzz/corpus/<target>/`, then mutates for
//! `SIGNALBOX_FUZZ_SECONDS`. Nothing here starts the server.

mod access_token;
mod api_query;
mod demux;
mod signaling;
mod socketio_frames;

use signalbox_fuzz_harness::{check_seeds, Fuzz};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
const FAILURES: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/fuzz-failures");

#[test]
fn demux_classify() {
    Fuzz::new("demux_classify", FUZZ_DIR, FAILURES)
        .max_len(64)
        .run(demux::target);
}

#[test]
fn signaling_message() {
    Fuzz::new("signaling_message", FUZZ_DIR, FAILURES)
        .max_len(2048)
        .dictionary(signaling::DICTIONARY)
        .run(signaling::target);
}

#[test]
fn access_token() {
    Fuzz::new("access_token", FUZZ_DIR, FAILURES)
        .max_len(1500)
        .dictionary(access_token::DICTIONARY)
        .run(access_token::target);
}

#[test]
fn api_query() {
    Fuzz::new("api_query", FUZZ_DIR, FAILURES)
        .max_len(1024)
        .dictionary(api_query::DICTIONARY)
        .run(api_query::target);
}

#[test]
fn socketio_frames() {
    Fuzz::new("socketio_frames", FUZZ_DIR, FAILURES)
        .max_len(4096)
        .run(socketio_frames::target);
}

#[test]
fn the_committed_seeds_are_the_ones_built_here() {
    check_seeds(FUZZ_DIR, "demux_classify", &demux::seeds());
    check_seeds(FUZZ_DIR, "signaling_message", &signaling::seeds());
    check_seeds(FUZZ_DIR, "access_token", &access_token::seeds());
    check_seeds(FUZZ_DIR, "api_query", &api_query::seeds());
    check_seeds(FUZZ_DIR, "socketio_frames", &socketio_frames::seeds());
}
