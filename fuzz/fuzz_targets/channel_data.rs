//! Arbitrary bytes through ChannelData parsing and stream framing: no panic, and a parsed
//! frame's data lies inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_stun::channel_data;

fuzz_target!(|data: &[u8]| {
    if let Some((channel, payload)) = channel_data::parse(data) {
        assert!((channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL).contains(&channel));
        assert!(payload.len() + channel_data::HEADER_LEN <= data.len());
    }
    if let Ok(Some(len)) = channel_data::frame_len(data) {
        assert!(len >= 4);
    }
});
