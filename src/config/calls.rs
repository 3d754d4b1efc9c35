//! `[calls]`: direct calls between the people of a space (`docs/protocol.md`, "Spaces and
//! calls").

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// Calls one connection may make per minute on average, and as many at once.
    pub ring_rate: u32,
    /// How long a call rings before it is missed.
    #[serde(deserialize_with = "super::duration")]
    pub ring_timeout: Duration,
    /// Most people in one space; more get `room-full`.
    pub max_people_per_space: usize,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ring_rate: 10,
            ring_timeout: Duration::from_secs(30),
            max_people_per_space: 500,
        }
    }
}

impl CallsConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=600).contains(&self.ring_rate) {
            return Err((
                "calls.ring_rate",
                "must be 1 to 600 (calls a minute)".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.ring_timeout) {
            return Err(("calls.ring_timeout", "must be 1s to 10m".into()));
        }
        if !(2..=100_000).contains(&self.max_people_per_space) {
            return Err(("calls.max_people_per_space", "must be 2 to 100000".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_bound_is_checked() {
        assert!(CallsConfig::default().validate().is_ok());
        let key = |c: CallsConfig| c.validate().map_err(|e| e.0);
        let d = CallsConfig::default;
        assert_eq!(
            key(CallsConfig {
                ring_rate: 0,
                ..d()
            }),
            Err("calls.ring_rate")
        );
        assert_eq!(
            key(CallsConfig {
                ring_timeout: Duration::from_millis(500),
                ..d()
            }),
            Err("calls.ring_timeout")
        );
        assert_eq!(
            key(CallsConfig {
                max_people_per_space: 1,
                ..d()
            }),
            Err("calls.max_people_per_space")
        );
    }
}
