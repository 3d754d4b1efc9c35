use super::*;

#[test]
fn room_names_follow_the_protocol_rule() {
    assert!(is_valid_room("team-standup_2.0"));
    assert!(is_valid_room(&"a".repeat(64)));
    assert!(!is_valid_room(""));
    assert!(!is_valid_room(&"a".repeat(65)));
    assert!(!is_valid_room("a b"));
    assert!(!is_valid_room("ä"));
    assert!(!is_valid_room("../x"));
}
use serde_json::json;

#[test]
fn error_code_names_match_the_wire_and_the_metrics_labels() {
    for code in ErrorCode::ALL {
        assert_eq!(json!(code), json!(code.as_str()));
        assert!(crate::metrics::METRICS
            .signaling_errors
            .by_name(code.as_str())
            .is_some());
    }
}

#[test]
fn a_join_with_name_and_resume_parses() {
    let m = parse_client(r#"{"type":"join","room":"standup-1","name":"Ann","resume":"t"}"#);
    assert_eq!(
        m,
        Ok(ClientMessage::Join {
            room: RoomId::parse("standup-1").expect("valid room"),
            name: Some("Ann".into()),
            resume: Some(ResumeToken::new("t")),
            token: None,
        })
    );
}

#[test]
fn signal_data_is_kept_byte_for_byte() {
    let text = r#"{"type":"signal","to":"abc","data":{"sdp":"v=0\r\n","n":[1, 2.50]}}"#;
    let Ok(ClientMessage::Signal { to, data }) = parse_client(text) else {
        panic!("not a signal");
    };
    assert_eq!(to.as_str(), "abc");
    assert_eq!(data.get(), r#"{"sdp":"v=0\r\n","n":[1, 2.50]}"#);
}

#[test]
fn null_data_is_a_value_but_missing_data_is_an_error() {
    assert!(parse_client(r#"{"type":"signal","to":"a","data":null}"#).is_ok());
    assert_eq!(
        parse_client(r#"{"type":"signal","to":"a"}"#),
        Err(ParseError::MissingField {
            kind: "signal",
            field: "data"
        })
    );
}

#[test]
fn malformed_frames_get_specific_errors() {
    assert!(matches!(parse_client("nope"), Err(ParseError::Json(_))));
    assert!(matches!(parse_client("[1]"), Err(ParseError::Json(_))));
    assert_eq!(parse_client("{}"), Err(ParseError::MissingType));
    assert_eq!(
        parse_client(r#"{"type":"dance"}"#),
        Err(ParseError::UnknownType("dance".into()))
    );
    assert_eq!(
        parse_client(r#"{"type":"join"}"#),
        Err(ParseError::MissingField {
            kind: "join",
            field: "room"
        })
    );
    assert_eq!(
        parse_client(r#"{"type":"join","room":"a b"}"#),
        Err(ParseError::BadRoom)
    );
    assert!(matches!(
        parse_client(r#"{"type":"join","room":5}"#),
        Err(ParseError::Json(_))
    ));
    let long = "é".repeat(65);
    assert_eq!(
        parse_client(&json!({"type":"join","room":"r","name":long}).to_string()),
        Err(ParseError::NameTooLong)
    );
    assert_eq!(
        parse_client(r#"{"type":"signal","to":"","data":1}"#),
        Err(ParseError::EmptyTo)
    );
}

#[test]
fn a_name_of_exactly_64_characters_is_accepted() {
    let name = "é".repeat(64);
    let text = json!({"type":"join","room":"r","name":name}).to_string();
    assert!(parse_client(&text).is_ok());
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        parse_client(r#"{"type":"ping","extra":[1]}"#),
        Ok(ClientMessage::Ping)
    );
}

#[test]
fn server_messages_serialize_as_documented() {
    let data = Payload::from_json(r#"{"sdp":"x"}"#).expect("valid JSON");
    let m = ServerMessage::Signal {
        from: PeerId::new("p1"),
        data,
    };
    assert_eq!(
        m.to_json(),
        r#"{"type":"signal","from":"p1","data":{"sdp":"x"}}"#
    );
    let joined = ServerMessage::Joined(Box::new(Joined {
        room: RoomId::parse("r").expect("valid room"),
        id: PeerId::new("me"),
        peers: vec![
            PeerInfo {
                id: PeerId::new("a"),
                name: Some("Ann".into()),
                host: true,
            },
            PeerInfo {
                id: PeerId::new("b"),
                name: None,
                host: false,
            },
        ],
        ice_servers: json!([]),
        resume: ResumeToken::new("tok"),
        host: false,
        locked: true,
    }));
    let v: serde_json::Value = serde_json::from_str(&joined.to_json()).expect("JSON");
    assert_eq!(
        v,
        json!({"type":"joined","room":"r","id":"me",
               "peers":[{"id":"a","name":"Ann","host":true},{"id":"b"}],
               "iceServers":[],"resume":"tok","host":false,"locked":true})
    );
    assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    let shutdown = ServerMessage::ServerShutdown {
        grace_s: 30,
        reconnect: false,
    };
    assert_eq!(
        shutdown.to_json(),
        r#"{"type":"server-shutdown","grace_s":30,"reconnect":false}"#
    );
    assert_eq!(
        ServerMessage::PeerLeft {
            id: PeerId::new("a")
        }
        .to_json(),
        r#"{"type":"peer-left","id":"a"}"#
    );
}

#[test]
fn queue_slots_stay_small() {
    assert!(std::mem::size_of::<ServerMessage>() <= 48);
}

#[test]
fn error_codes_have_their_documented_names() {
    let names: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .expect("an error code serializes")
                .as_str()
                .expect("as a string")
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "bad-request",
            "room-full",
            "not-joined",
            "already-joined",
            "unknown-peer",
            "rate-limited",
            "too-large",
            "forbidden",
            "shutting-down",
            "not-host",
            "declined",
            "lobby-timeout",
            "removed",
            "unknown-person",
            "not-ringing",
            "unavailable"
        ]
    );
}

#[test]
fn host_actions_parse_with_their_peer() {
    let host = |text: &str| match parse_client(text) {
        Ok(ClientMessage::Host(action)) => action,
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(host(r#"{"type":"lock"}"#), HostAction::Lock);
    assert_eq!(host(r#"{"type":"unlock"}"#), HostAction::Unlock);
    assert_eq!(host(r#"{"type":"end"}"#), HostAction::End);
    assert_eq!(
        host(r#"{"type":"admit","peer":"p1"}"#),
        HostAction::Admit(PeerId::new("p1"))
    );
    assert_eq!(
        host(r#"{"type":"decline","peer":"p1"}"#),
        HostAction::Decline(PeerId::new("p1"))
    );
    assert_eq!(
        host(r#"{"type":"remove","peer":"p1"}"#),
        HostAction::Remove(PeerId::new("p1"))
    );
    assert_eq!(
        host(r#"{"type":"mute-request","peer":"all","kind":"audio"}"#),
        HostAction::MuteRequest {
            target: MuteTarget::All,
            kind: MediaKind::Audio
        }
    );
    assert_eq!(
        host(r#"{"type":"mute-request","peer":"p1","kind":"video"}"#),
        HostAction::MuteRequest {
            target: MuteTarget::Peer(PeerId::new("p1")),
            kind: MediaKind::Video
        }
    );
}

#[test]
fn host_actions_without_a_usable_peer_or_kind_are_bad_requests() {
    assert_eq!(
        parse_client(r#"{"type":"admit"}"#),
        Err(ParseError::MissingField {
            kind: "admit",
            field: "peer"
        })
    );
    assert_eq!(
        parse_client(r#"{"type":"remove","peer":""}"#),
        Err(ParseError::EmptyPeer { kind: "remove" })
    );
    assert_eq!(
        parse_client(r#"{"type":"mute-request","peer":"all","kind":"screen"}"#),
        Err(ParseError::BadMediaKind)
    );
    assert_eq!(
        parse_client(r#"{"type":"mute-request","peer":"all"}"#),
        Err(ParseError::MissingField {
            kind: "mute-request",
            field: "kind"
        })
    );
    assert!(matches!(
        parse_client(r#"{"type":"decline","peer":7}"#),
        Err(ParseError::Json(_))
    ));
}

#[test]
fn meeting_messages_serialize_as_documented() {
    let p = || PeerId::new("p1");
    let cases = [
        (
            ServerMessage::Waiting { id: p() },
            json!({"type":"waiting","id":"p1"}),
        ),
        (
            ServerMessage::Knock {
                peer: p(),
                name: Some("Bo".into()),
            },
            json!({"type":"knock","peer":"p1","name":"Bo"}),
        ),
        (
            ServerMessage::KnockWithdrawn { peer: p() },
            json!({"type":"knock-withdrawn","peer":"p1"}),
        ),
        (
            ServerMessage::HostChanged { peer: p() },
            json!({"type":"host-changed","peer":"p1"}),
        ),
        (
            ServerMessage::RoomLocked { locked: true },
            json!({"type":"room-locked","locked":true}),
        ),
        (
            ServerMessage::MuteRequest {
                from: p(),
                kind: MediaKind::Video,
            },
            json!({"type":"mute-request","from":"p1","kind":"video"}),
        ),
        (ServerMessage::Ended, json!({"type":"ended"})),
    ];
    for (msg, want) in cases {
        let got: serde_json::Value = serde_json::from_str(&msg.to_json()).expect("JSON");
        assert_eq!(got, want);
    }
}

#[test]
fn a_relayed_message_is_read_for_its_type_and_code_whatever_its_shape() {
    use super::{People, SpaceId};
    let joined = ServerMessage::Joined(Box::new(Joined {
        room: RoomId::parse("r").expect("valid room"),
        id: PeerId::new("p"),
        peers: Vec::new(),
        ice_servers: serde_json::json!([]),
        resume: ResumeToken::new("t"),
        host: true,
        locked: false,
    }));
    let people = ServerMessage::People(Box::new(People {
        space: SpaceId::parse("s").expect("valid space"),
        you: PeerId::new("p"),
        people: Vec::new(),
        resume: ResumeToken::new("t"),
        call: None,
    }));
    let cases = [
        (joined, "joined", None),
        (people, "people", None),
        (ServerMessage::Pong, "pong", None),
        (
            ServerMessage::error(ErrorCode::RoomFull, "full"),
            "error",
            Some("room-full"),
        ),
        (
            ServerMessage::PeerLeft {
                id: PeerId::new("p"),
            },
            "peer-left",
            None,
        ),
    ];
    for (msg, kind, code) in cases {
        let relayed = Relayed(msg.to_json());
        assert_eq!(relayed.kind(), kind, "{}", relayed.0);
        assert_eq!(relayed.code(), code, "{}", relayed.0);
        assert_eq!(
            ServerMessage::Relayed(Box::new(relayed)).to_json(),
            msg.to_json()
        );
    }
    assert_eq!(Relayed("{}".into()).kind(), "");
}
