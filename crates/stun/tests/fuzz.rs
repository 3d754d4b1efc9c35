//! Stable fuzz targets for the codec: every datagram the server receives goes through
//! [`MessageRef::parse`] or the ChannelData parser first. Each target replays
//! `fuzz/corpus/<target>/` and then mutates for `SIGNALBOX_FUZZ_SECONDS` (see `fuzz/README.md`).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use signalbox_fuzz_harness::{check_seeds, Features, Fuzz};
use signalbox_stun::{attr, binding_response, channel_data, vectors};
use signalbox_stun::{Class, Integrity, MessageRef, MessageWriter, Method, TransactionId};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");
const FAILURES: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/fuzz-failures");

#[test]
fn stun_message() {
    Fuzz::new("stun_message", FUZZ_DIR, FAILURES)
        .max_len(1500)
        .run(stun_message_target);
}

#[test]
fn channel_data() {
    Fuzz::new("channel_data", FUZZ_DIR, FAILURES)
        .max_len(1500)
        .run(channel_data_target);
}

#[test]
fn the_committed_seeds_are_the_ones_built_here() {
    check_seeds(FUZZ_DIR, "stun_message", &stun_seeds());
    check_seeds(FUZZ_DIR, "channel_data", &channel_data_seeds());
}

/// A datagram through the parser, every accessor, the Binding responder and re-encoding.
fn stun_message_target(data: &[u8], features: &mut Features) -> Result<(), String> {
    let msg = match MessageRef::parse(data) {
        Ok(msg) => msg,
        Err(e) => {
            features.add(hash(&std::mem::discriminant(&e)));
            return Ok(());
        }
    };
    // Coarse on purpose: the method's 4096 values would each look new.
    features.add(hash(&(
        format!("{:?}", msg.class()),
        msg.method().0.min(0x10),
        msg.integrity_algorithm().map(|a| format!("{a:?}")),
        msg.has_valid_fingerprint(),
    )));
    if msg.as_bytes() != data {
        return Err("view: the parsed message is not the whole datagram".into());
    }
    // One message per datagram: on a stream the framer must cut exactly this message.
    if channel_data::frame_len(data) != Ok(Some(data.len())) {
        return Err(format!(
            "framing: a {}-byte message frames as {:?}",
            data.len(),
            channel_data::frame_len(data)
        ));
    }
    let _ = msg.unknown_comprehension_required(attr::BINDING_UNDERSTOOD);
    let _ = msg.verify_integrity(b"fuzz");
    let _ = msg.integrity_algorithm();
    let _ = msg.has_valid_fingerprint();
    let _ = msg.xor_address(attr::XOR_MAPPED_ADDRESS);
    let _ = msg.xor_addresses(attr::XOR_PEER_ADDRESS).count();
    let _ = msg.u32_attr(attr::LIFETIME);
    let _ = msg.error_code();
    let _ = msg.get_all(attr::XOR_PEER_ADDRESS).count();
    check_binding_response(&msg)?;
    check_reencoding(&msg)
}

/// A Binding answer is a well-formed message for the same transaction, with FINGERPRINT.
fn check_binding_response(msg: &MessageRef<'_>) -> Result<(), String> {
    let from: SocketAddr = "192.0.2.1:3478".parse().expect("address");
    let mut out = Vec::new();
    let n = binding_response(msg, from, &mut out);
    if n == 0 {
        return if out.is_empty() {
            Ok(())
        } else {
            Err("binding: nothing to send, yet the buffer holds bytes".into())
        };
    }
    let answer =
        MessageRef::parse(&out).map_err(|e| format!("binding: the answer does not parse: {e}"))?;
    if n != out.len()
        || answer.transaction_id() != msg.transaction_id()
        || answer.has_valid_fingerprint() != Some(true)
    {
        return Err("binding: the answer's length, transaction or fingerprint is wrong".into());
    }
    match (answer.class(), answer.error_code()) {
        (Class::Success, None) => Ok(()),
        (Class::Error, Some(Ok((420, _)))) => Ok(()),
        other => Err(format!("binding: unexpected answer {other:?}")),
    }
}

/// The counted attributes written back with a new integrity and fingerprint parse to the
/// same list, and the new integrity and fingerprint check out.
fn check_reencoding(msg: &MessageRef<'_>) -> Result<(), String> {
    let plain = |m: &MessageRef<'_>| -> Vec<(u16, Vec<u8>)> {
        m.attributes()
            .filter(|(t, _)| {
                !matches!(
                    *t,
                    attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
                )
            })
            .map(|(t, v)| (t, v.to_vec()))
            .collect()
    };
    let attrs = plain(msg);
    let mut copy = Vec::new();
    let mut w = MessageWriter::new(&mut copy, msg.method(), msg.class(), msg.transaction_id());
    for (t, v) in &attrs {
        w.attr(*t, v);
    }
    w.integrity(b"k").fingerprint();
    if w.finish() == 0 {
        return Ok(());
    }
    let again =
        MessageRef::parse(&copy).map_err(|e| format!("reencoding: our output fails: {e}"))?;
    if again.method() != msg.method() || again.class() != msg.class() {
        return Err("reencoding: method or class changed".into());
    }
    if plain(&again) != attrs {
        return Err("reencoding: the attribute list changed".into());
    }
    if again.verify_integrity(b"k") != Integrity::Ok || again.has_valid_fingerprint() != Some(true)
    {
        return Err("reencoding: our integrity or fingerprint does not verify".into());
    }
    Ok(())
}

/// A datagram through the ChannelData parser and the stream framer.
fn channel_data_target(data: &[u8], features: &mut Features) -> Result<(), String> {
    let parsed = channel_data::parse(data);
    let framed = channel_data::frame_len(data);
    features.add(hash(&(
        parsed.map(|(c, _)| c >> 12),
        framed.map(|f| f.is_some()).ok(),
    )));
    if let Some((channel, payload)) = parsed {
        if !(channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL).contains(&channel) {
            return Err(format!("channel: 0x{channel:04x} accepted"));
        }
        let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if payload.len() != declared || data.get(4..4 + declared) != Some(payload) {
            return Err("payload: not the declared bytes after the header".into());
        }
        let mut header = [0u8; 4];
        channel_data::write_header(&mut header, channel, declared as u16);
        if header[..] != data[..4] {
            return Err("header: writing it back gives other bytes".into());
        }
        if framed != Ok(Some(channel_data::padded_len(declared))) {
            return Err(format!(
                "framing: {declared} data bytes frame as {framed:?}"
            ));
        }
    }
    match (data.first().map(|b| b >> 6), framed) {
        (_, Ok(Some(len))) if len < 4 => Err(format!("framing: a {len}-byte frame")),
        (None, Ok(None)) | (Some(0 | 1), Ok(_)) | (Some(2 | 3), Err(_)) => Ok(()),
        (first, result) => Err(format!("framing: first bits {first:?} give {result:?}")),
    }
}

fn hash(value: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn message(method: Method, class: Class, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method, class, TransactionId([7; 12]));
    build(&mut w);
    w.finish();
    buf
}

fn stun_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let peer4: SocketAddr = "198.51.100.7:5000".parse().expect("address");
    let peer6: SocketAddr = "[2001:db8::7]:5000".parse().expect("address");
    let creds = |w: &mut MessageWriter<'_>| {
        w.attr(attr::USERNAME, b"1700003600:alice")
            .attr(attr::REALM, b"example.org")
            .attr(attr::NONCE, &[b'0'; 48]);
    };
    vec![
        (
            "binding-request",
            message(Method::BINDING, Class::Request, |_| {}),
        ),
        (
            "binding-request-fingerprint",
            message(Method::BINDING, Class::Request, |w| {
                w.attr(attr::SOFTWARE, b"fuzz").fingerprint();
            }),
        ),
        (
            "allocate-signed",
            message(Method::ALLOCATE, Class::Request, |w| {
                w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .u32(attr::LIFETIME, 600);
                creds(w);
                w.integrity(&[1; 16]).fingerprint();
            }),
        ),
        (
            "allocate-sha256",
            message(Method::ALLOCATE, Class::Request, |w| {
                w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
                creds(w);
                w.integrity_sha256(&[1; 16]).fingerprint();
            }),
        ),
        (
            "create-permission-two-peers",
            message(Method::CREATE_PERMISSION, Class::Request, |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, peer4)
                    .xor_address(attr::XOR_PEER_ADDRESS, peer6);
                creds(w);
                w.integrity(&[1; 16]).fingerprint();
            }),
        ),
        (
            "channel-bind",
            message(Method::CHANNEL_BIND, Class::Request, |w| {
                w.u32(attr::CHANNEL_NUMBER, 0x4000 << 16)
                    .xor_address(attr::XOR_PEER_ADDRESS, peer4);
                creds(w);
                w.integrity(&[1; 16]);
            }),
        ),
        (
            "send-indication",
            message(Method::SEND, Class::Indication, |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, peer4)
                    .attr(attr::DATA, b"hello peer")
                    .attr(attr::DONT_FRAGMENT, &[]);
            }),
        ),
        (
            "error-401",
            message(Method::ALLOCATE, Class::Error, |w| {
                w.error_code(401, "Unauthenticated")
                    .attr(attr::REALM, b"example.org")
                    .attr(attr::NONCE, &[b'0'; 48])
                    .fingerprint();
            }),
        ),
        (
            "error-420-unknown",
            message(Method::BINDING, Class::Error, |w| {
                w.error_code(420, "Unknown Attribute")
                    .unknown_attributes(&[0x7777, 0x0030]);
            }),
        ),
        (
            "rfc5769-long-term",
            vectors::hex(vectors::RFC5769_LONG_TERM),
        ),
    ]
}

fn channel_data_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("four-bytes", vec![0x40, 0x00, 0, 4, b'a', b'b', b'c', b'd']),
        ("padded", vec![0x40, 0x01, 0, 1, 9, 0, 0, 0]),
        ("empty", vec![0x4F, 0xFF, 0, 0]),
        ("legacy-number", vec![0x7F, 0xFE, 0, 2, 1, 2]),
        ("short", vec![0x40, 0x00, 0, 9, 1, 2]),
    ]
}
