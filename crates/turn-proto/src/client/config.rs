//! What a [`Client`](super::Client) is set up with: credentials, transport, timers, and the
//! values its requests carry (channel numbers, address families, Allocate options).

use std::fmt;
use std::time::Duration;

use signalbox_stun::channel_data::{MAX_CHANNEL, MIN_CHANNEL};

use crate::auth::MAX_USERNAME_LEN;

use super::UsageError;

/// The long-term credentials of a TURN user (RFC 8489 §9.2). For the REST-API scheme the
/// username is `EXPIRY[:USER]` and the password `base64(HMAC-SHA1(secret, username))`
/// ([`crate::auth::rest_password`]).
#[derive(Clone)]
pub struct Credentials {
    pub(super) username: String,
    pub(super) password: String,
}

impl Credentials {
    /// Credentials for `username` (1 to [`MAX_USERNAME_LEN`] bytes, RFC 8489 §14.3) and
    /// `password`.
    pub fn new(username: &str, password: &str) -> Result<Credentials, UsageError> {
        if username.is_empty() || username.len() > MAX_USERNAME_LEN {
            return Err(UsageError::BadUsernameLength(username.len()));
        }
        Ok(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The USERNAME the client sends.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How the client reaches the server: it decides retransmission and ChannelData padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: requests are retransmitted (RFC 8489 §6.2.1), ChannelData is not padded.
    Udp,
    /// A TCP or TLS byte stream: no retransmission (§6.2.2), ChannelData padded to 4 bytes
    /// (RFC 8656 §12.5). The caller splits the stream into messages
    /// ([`crate::framing::Deframer`]) before [`Client::handle_input`](super::Client::handle_input).
    Stream,
}

/// Everything a [`Client`](super::Client) is set up with; the timers default to RFC 8489's values.
#[derive(Clone, Debug)]
pub struct Config {
    pub(super) credentials: Credentials,
    pub(super) transport: Transport,
    pub(super) seed: [u8; 32],
    rto: Duration,
    max_sends: u32,
    last_wait: u32,
    stream_timeout: Duration,
}

impl Config {
    /// A client with `credentials` over `transport`. `seed` keys the transaction ids: pass 32
    /// random bytes (RFC 8489 §5 wants ids unpredictable to others); a fixed seed gives
    /// reproducible ids in tests.
    pub fn new(credentials: Credentials, transport: Transport, seed: [u8; 32]) -> Config {
        Config {
            credentials,
            transport,
            seed,
            rto: Duration::from_millis(500),
            max_sends: 7,
            last_wait: 16,
            stream_timeout: Duration::from_millis(39_500),
        }
    }

    /// UDP retransmission (RFC 8489 §6.2.1): first timeout `rto` (at least 1 ms), sent at most
    /// `max_sends` times (Rc, at least 1), then `last_wait` × `rto` (Rm, at least 1) for the
    /// last answer.
    pub fn with_retransmission(mut self, rto: Duration, max_sends: u32, last_wait: u32) -> Config {
        self.rto = rto.max(Duration::from_millis(1));
        self.max_sends = max_sends.max(1);
        self.last_wait = last_wait.max(1);
        self
    }

    /// How long a request over a stream waits for its answer (Ti, RFC 8489 §6.2.2).
    pub fn with_stream_timeout(mut self, timeout: Duration) -> Config {
        self.stream_timeout = timeout;
        self
    }

    /// How long after its `sends`-th transmission a request waits before it is sent again or,
    /// after the last one, times out.
    pub(super) fn wait_after(&self, sends: u32) -> Duration {
        match self.transport {
            Transport::Stream => self.stream_timeout,
            Transport::Udp if sends >= self.max_sends => self.rto * self.last_wait,
            Transport::Udp => self.rto * (1u32 << sends.saturating_sub(1).min(16)),
        }
    }

    pub(super) fn max_sends(&self) -> u32 {
        match self.transport {
            Transport::Udp => self.max_sends,
            Transport::Stream => 1,
        }
    }
}

/// A channel number in RFC 8656 §12's range 0x4000–0x4FFF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(pub(super) u16);

impl ChannelNumber {
    /// The first channel number.
    pub const MIN: ChannelNumber = ChannelNumber(MIN_CHANNEL);
    /// The last channel number.
    pub const MAX: ChannelNumber = ChannelNumber(MAX_CHANNEL);

    /// `None` outside 0x4000–0x4FFF.
    pub fn new(number: u16) -> Option<ChannelNumber> {
        (MIN_CHANNEL..=MAX_CHANNEL)
            .contains(&number)
            .then_some(ChannelNumber(number))
    }

    /// The number as it goes on the wire.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// The address family of a relayed address (REQUESTED-ADDRESS-FAMILY, RFC 8656 §18.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressFamily {
    /// IPv4 (family 0x01).
    V4,
    /// IPv6 (family 0x02).
    V6,
}

/// What an Allocate asks for besides a UDP relay (RFC 8656 §7.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocateOptions {
    /// LIFETIME to ask for (whole seconds); `None` leaves it to the server (usually 10 min).
    pub lifetime: Option<Duration>,
    /// REQUESTED-ADDRESS-FAMILY; `None` means IPv4 (the server's default).
    pub family: Option<AddressFamily>,
}
