//! Human-written durations in configuration: `"500ms"`, `"30s"`, `"5m"`, `"12h"`, `"7d"`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("{s:?} is not a duration; use e.g. \"30s\", \"5m\", \"12h\", \"7d\"")
        })?;
        let secs = match unit.trim() {
            "ms" => return Ok(Self(Duration::from_millis(n))),
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("{s:?} has an unknown unit; use ms, s, m, h or d")),
        };
        n.checked_mul(secs)
            .map(|s| Self(Duration::from_secs(s)))
            .ok_or_else(|| format!("{s:?} is too long"))
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(
            ConfigDuration::parse("30s").unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            ConfigDuration::parse("12h").unwrap().0,
            Duration::from_secs(43_200)
        );
        assert_eq!(
            ConfigDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        for bad in ["", "s", "10", "10 parsecs", "-1s", "1.5h"] {
            assert!(ConfigDuration::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,24}") {
            let _ = ConfigDuration::parse(&s);
        }

        #[test]
        fn numbers_with_units_round_trip(n in 0u64..1_000_000, unit in 0usize..4) {
            let (suffix, secs) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)][unit];
            let d = ConfigDuration::parse(&format!("{n}{suffix}")).unwrap();
            proptest::prop_assert_eq!(d.0, Duration::from_secs(n * secs));
        }
    }
}
