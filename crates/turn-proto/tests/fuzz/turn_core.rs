//! The TURN core as a whole: sequences of client requests (UDP datagrams and TCP/TLS stream
//! bytes cut at chosen points), peer datagrams, hand-overs between workers and time steps,
//! through one or two [`signalbox_turn_proto::server::Core`]s, with the invariants of
//! [`checks`] after every transmission and every operation. The input format is in [`ops`];
//! the world the cores live in is in [`world`].

mod checks;
mod ops;
mod requests;
mod seeds;
mod sockets;
mod tables;
mod world;

use signalbox_fuzz_harness::{Features, Reader};

pub(crate) use ops::mutate;
pub(crate) use seeds::seeds;
pub(crate) use world::Stats;

use ops::{Config, Op, MAX_OPS};
use world::World;

/// The fuzz target.
pub(crate) fn target(input: &[u8], features: &mut Features) -> Result<(), String> {
    let (mut world, result) = run(input, false);
    for outcome in std::mem::take(&mut world.outcomes) {
        features.add(outcome);
    }
    result
}

/// What the seed checks need: the world's counts, or the failure.
pub(crate) fn stats(input: &[u8]) -> Result<Stats, String> {
    let (mut world, result) = run(input, false);
    result.map(|()| std::mem::take(&mut world.stats))
}

/// The input's configuration, operations and transmissions, in words; the failure last.
pub(crate) fn describe(input: &[u8]) -> String {
    let (mut world, result) = run(input, true);
    let mut lines = world.trace.take().unwrap_or_default();
    lines.push(match result {
        Ok(()) => "(no invariant broke)".into(),
        Err(e) => format!("FAILS: {e}"),
    });
    lines.join("\n")
}

fn run(input: &[u8], trace: bool) -> (World, Result<(), String>) {
    let mut r = Reader::new(input);
    let config = Config::decode(&mut r);
    let mut world = World::new(config, trace);
    world.note(|| {
        format!(
            "{config:?}: {} worker(s), user_quota {}, total_quota {}",
            config.workers(),
            config.user_quota(),
            config.total_quota()
        )
    });
    let mut n = 0;
    while !r.is_empty() && n < MAX_OPS {
        let op = Op::decode(&mut r);
        let result = if trace {
            // Describing a panicking input keeps the trace up to the panic.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.apply(&op)))
                .unwrap_or_else(|_| Err("panic: see the message above".into()))
        } else {
            world.apply(&op)
        };
        let result = result.and_then(|()| world.check_state());
        let live: usize = world.cores.iter().map(|c| c.table().len()).sum();
        world.outcomes.push((99 << 32) | live as u64);
        if let Err(e) = result {
            return (world, Err(format!("{e}\n(operation {n}: {op:?})")));
        }
        n += 1;
    }
    (world, Ok(()))
}

/// The checks themselves: each says no when its invariant breaks.
#[test]
fn the_checks_catch_a_refused_destination_and_a_quota_overrun() {
    use signalbox_turn_proto::server::{Action, Payload, Via};
    let alice = |client| Op::Allocate {
        client,
        cred: 0,
        flags: 0,
        lifetime: 0,
    };
    let roomy = Config {
        flags: 0,
        quotas: 7,
    };
    let input = ops::encode(roomy, &[alice(0), alice(1)]);
    let (mut world, result) = run(&input, false);
    assert_eq!(result, Ok(()));
    assert_eq!(world.history.len(), 2, "two allocations");

    let to_loopback = Action::Send {
        via: Via::Relay(world.history[0].id),
        to: "127.0.0.1:53".parse().expect("address"),
        payload: Payload::Input { start: 0, end: 0 },
    };
    let refused = world.check_action(0, to_loopback, &[]);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.starts_with("refused destination: ")),
        "{refused:?}"
    );

    world.config.quotas = 0;
    let over = world.check_state();
    assert!(
        over.as_ref()
            .is_err_and(|e| e.starts_with("quota: user alice holds 2")),
        "{over:?}"
    );
}
