//! RFC test vectors for STUN long-term credentials, for this crate's tests and its users' (the
//! TURN core checks its credential code against the same bytes).

/// Bytes from a hex dump; whitespace and anything else that is not a hex digit is skipped.
///
/// # Panics
/// On an odd number of hex digits (test data only).
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .expect("two hex digits")
        })
        .collect()
}

/// RFC 5769 §2.4: request with long-term credentials (USERNAME, NONCE, REALM).
pub const RFC5769_LONG_TERM: &str = "
    00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00
    00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46  53 54 76 79
                 36 34 73 41
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66";

/// RFC 8489 Appendix B.1 as corrected by verified erratum 6268 (the printed vector omits
/// PASSWORD-ALGORITHM and carries a wrong length and HMAC): USERHASH, NONCE with the
/// "obMatJos2" cookie, REALM, PASSWORD-ALGORITHM SHA-256, MESSAGE-INTEGRITY-SHA256.
pub const RFC8489_B1: &str = "
    00 01 00 90  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 1e 00 20  4a 3c f3 8f  ef 69 92 bd  a9 52 c6 78  04 17 da 0f
                 24 81 94 15  56 9e 60 b2  05 c4 6e 41  40 7f 17 04
    00 15 00 29  6f 62 4d 61  74 4a 6f 73  32 41 41 41  43 66 2f 2f  34 39 39 6b
                 39 35 34 64  36 4f 4c 33  34 6f 4c 39  46 53 54 76  79 36 34 73
                 41 00 00 00
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 1d 00 04  00 02 00 00
    00 1c 00 20  b5 c7 bf 00  5b 6c 52 a2  1c 51 c5 e8  92 f8 19 24
                 13 62 96 cb  92 7c 43 14  93 09 27 8c  c6 51 8e 65";
