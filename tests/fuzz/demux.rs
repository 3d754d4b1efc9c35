//! The one-port demux classifier on the first bytes of a connection: its decision never
//! changes as more bytes arrive, it waits only while a STUN header is incomplete, and it
//! agrees with the STUN parser (for the methods a client can open with) and with the first
//! bytes of TLS and HTTP.

use signalbox::demux::{classify, Protocol};
use signalbox_fuzz_harness::Features;
use signalbox_stun::{Class, MessageRef, MessageWriter, Method, TransactionId};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

pub(crate) fn target(data: &[u8], features: &mut Features) -> Result<(), String> {
    let whole = classify(data);
    features.add(whole as u64);
    let mut decided: Option<(usize, Protocol)> = None;
    for n in 0..=data.len().min(16) {
        let p = classify(&data[..n]);
        match decided {
            Some((at, first)) if p != first => {
                return Err(format!(
                    "decision: {at} bytes say {first:?}, {n} bytes say {p:?}"
                ));
            }
            None if p != Protocol::NeedMore => decided = Some((n, p)),
            _ => {}
        }
    }
    let first = data.first().copied();
    let expected = match first {
        None => Protocol::NeedMore,
        Some(0x16) => Protocol::Tls,
        Some(b) if b & 0xC0 != 0 => Protocol::Other,
        Some(_) if data.len() < 8 => Protocol::NeedMore,
        Some(_) if data[4..8] == COOKIE => Protocol::Stun,
        Some(_) => Protocol::Other,
    };
    if whole != expected {
        return Err(format!("decision: {whole:?} where {expected:?} is due"));
    }
    // Every STUN and TURN method is below 0x80, which keeps the first byte at 0 or 1; a
    // message type starting 0x16 is syntactically STUN but no client sends one, and the demux
    // rightly calls it TLS.
    let opening = MessageRef::parse(data).is_ok_and(|m| m.method().0 < 0x80);
    if opening && whole != Protocol::Stun {
        return Err(format!("stun: a STUN message is classified {whole:?}"));
    }
    let http = [
        &b"GET "[..],
        b"POST",
        b"HEAD",
        b"PUT ",
        b"PRI ",
        b"OPTI",
        b"DELE",
    ];
    if http.iter().any(|m| data.starts_with(m)) && whole != Protocol::Other {
        return Err(format!("http: a request line is classified {whole:?}"));
    }
    Ok(())
}

pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut binding = Vec::new();
    let mut w = MessageWriter::new(
        &mut binding,
        Method::BINDING,
        Class::Request,
        TransactionId([1; 12]),
    );
    w.fingerprint();
    w.finish();
    vec![
        (
            "client-hello",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
        ),
        ("stun-binding", binding.clone()),
        ("stun-header-only", binding[..8].to_vec()),
        ("http-get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "http2-preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        ("channel-data", vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]),
        ("zero-bits-no-cookie", vec![0, 1, 0, 0, 1, 2, 3, 4, 5]),
    ]
}
