//! Byte-level mutations in the manner of libFuzzer's: flips, interesting values, inserted,
//! deleted, copied and spliced ranges, and tokens from a target's dictionary. No coverage
//! feedback drives them; the targets' own features ([`crate::Features`]) decide what is kept.

use crate::rng::Rng;

/// Byte values at the edges of common fields: signs, the STUN/ChannelData/TLS first bytes,
/// ASCII punctuation that JSON, URLs and tokens care about.
const INTERESTING_8: &[u8] = &[
    0, 1, 2, 3, 4, 0x10, 0x16, 0x20, 0x22, 0x25, 0x26, 0x2e, 0x3d, 0x3f, 0x40, 0x5c, 0x7b, 0x7d,
    0x7f, 0x80, 0xc0, 0xfe, 0xff,
];

/// 16-bit values at the edges of STUN lengths, channel numbers and ports.
const INTERESTING_16: &[u16] = &[
    0, 1, 3, 4, 0x14, 0xff, 0x100, 0x3fff, 0x4000, 0x4fff, 0x5000, 0x7ffe, 0x7fff, 0x8000, 0xfffe,
    0xffff,
];

/// Applies one to a few stacked mutations to `input`, keeping it at most `max_len` bytes.
pub(crate) fn mutate(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    pool: &[Vec<u8>],
    dictionary: &[&[u8]],
    max_len: usize,
) {
    let stack = 1 + rng.below(4);
    for _ in 0..stack {
        mutate_once(rng, input, pool, dictionary);
    }
    input.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], dictionary: &[&[u8]]) {
    if input.is_empty() {
        let n = 1 + rng.below(16);
        input.extend((0..n).map(|_| rng.byte()));
        return;
    }
    let len = input.len();
    let at = rng.below(len);
    match rng.below(12) {
        0 => input[at] ^= 1 << rng.below(8),
        1 => input[at] = rng.byte(),
        2 => input[at] = INTERESTING_8[rng.below(INTERESTING_8.len())],
        3 => {
            let delta = 1 + rng.below(8) as u8;
            input[at] = if rng.one_in(2) {
                input[at].wrapping_add(delta)
            } else {
                input[at].wrapping_sub(delta)
            };
        }
        4 if len >= 2 => {
            let at = rng.below(len - 1);
            let v = INTERESTING_16[rng.below(INTERESTING_16.len())].to_be_bytes();
            input[at..at + 2].copy_from_slice(&v);
        }
        5 => {
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            input.splice(at..at, bytes);
        }
        6 => {
            let n = 1 + rng.below((len - at).min(16));
            input.drain(at..at + n);
        }
        7 => {
            // Copies a range of the input somewhere else in it (repeats a field or a message).
            let n = 1 + rng.below((len - at).min(64));
            let chunk = input[at..at + n].to_vec();
            let to = rng.below(len + 1);
            input.splice(to..to, chunk);
        }
        8 if !pool.is_empty() => {
            // Splice: this input's head, another's tail.
            let other = &pool[rng.below(pool.len())];
            let from = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
        9 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())];
            if rng.one_in(2) {
                input.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(len);
                input.splice(at..end, token.iter().copied());
            }
        }
        10 => input.truncate(at),
        _ => {
            let n = 1 + rng.below((len - at).min(8));
            for b in &mut input[at..at + n] {
                *b = rng.byte();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_respect_the_length_cap_and_change_the_input() {
        let mut rng = Rng::new(3);
        let seed = b"{\"type\":\"join\",\"room\":\"r\"}".to_vec();
        let pool = vec![seed.clone()];
        let mut changed = 0;
        for _ in 0..2000 {
            let mut input = seed.clone();
            mutate(&mut rng, &mut input, &pool, &[b"\"name\""], 32);
            assert!(input.len() <= 32);
            changed += usize::from(input != seed);
        }
        assert!(
            changed > 1800,
            "only {changed} of 2000 mutations changed the input"
        );
    }

    #[test]
    fn an_empty_input_grows() {
        let mut rng = Rng::new(4);
        let mut input = Vec::new();
        mutate(&mut rng, &mut input, &[], &[], 64);
        assert!(!input.is_empty());
    }
}
