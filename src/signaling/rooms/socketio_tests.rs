//! The rooms of the Socket.IO endpoint in the one registry: two members at most, never locked,
//! apart from every native room.

use super::tests::{config, error_code, Bench};
use super::*;

fn sio_join(b: &mut Bench, conn: u64, name: &str) -> Vec<Output> {
    let req = JoinRequest {
        room: RoomId::socketio(name),
        name: None,
        resume: None,
        invite: None,
        admission: Ok(Admission::default()),
    };
    b.join_req(conn, req, 0)
}

fn joined_peers(out: &[Output], conn: u64) -> Option<usize> {
    out.iter().find_map(|o| match o {
        Output::Send {
            conn: c,
            msg: ServerMessage::Joined(j),
        } if *c == ConnId(conn) => Some(j.peers.len()),
        _ => None,
    })
}

#[test]
fn a_socketio_room_takes_two_whatever_max_peers_says() {
    let mut b = Bench::new();
    assert_eq!(joined_peers(&sio_join(&mut b, 1, "r"), 1), Some(0));
    assert_eq!(joined_peers(&sio_join(&mut b, 2, "r"), 2), Some(1));
    assert_eq!(
        error_code(&sio_join(&mut b, 3, "r")),
        Some(ErrorCode::RoomFull)
    );
    assert_eq!((b.reg.room_count(), b.reg.peer_count()), (1, 2));
}

#[test]
fn a_socketio_room_is_never_a_native_room_of_the_same_name() {
    let mut b = Bench::new();
    b.joined(1, "r");
    assert_eq!(joined_peers(&sio_join(&mut b, 2, "r"), 2), Some(0));
    assert_eq!(b.reg.room_count(), 2);
    let names: Vec<String> = b.reg.snapshot().into_iter().map(|r| r.room).collect();
    assert_eq!(names, ["@r", "r"]);
}

#[test]
fn a_socketio_room_does_not_start_locked_when_native_rooms_do() {
    let mut b = Bench::with(RegistryConfig {
        lock_new_rooms: true,
        ..config()
    });
    sio_join(&mut b, 1, "r");
    let out = sio_join(&mut b, 2, "r");
    assert_eq!(joined_peers(&out, 2), Some(1), "{out:?}");
}

#[test]
fn socketio_room_names_cannot_be_written_as_native_ones() {
    assert!(RoomId::socketio("r").is_socketio());
    assert!(!RoomId::parse("r").expect("valid").is_socketio());
    assert_eq!(RoomId::parse("@r"), None);
}
