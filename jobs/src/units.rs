//! Sizes ("16MiB", "1.5GB", or a byte count) and durations ("30s",
//! "250ms") in job files, parsed by `bytesize` and `humantime`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, written as a string with a unit or as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse::<bytesize::ByteSize>().map(|b| Size(b.as_u64())).map_err(|_| {
            format!("invalid size `{s}`, expected a number of bytes or a size such as \"16MiB\" or \"1.5GB\"")
        })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a number of bytes or a size such as \"16MiB\""))?
        {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A span of time, written as "30s", "250ms", "1m 30s".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| format!("invalid duration `{s}` ({e}), expected e.g. \"30s\" or \"250ms\""))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("8MiB".parse::<Size>().unwrap(), Size(8 << 20));
        assert_eq!("1.5GB".parse::<Size>().unwrap(), Size(1_500_000_000));
        assert_eq!("16 KiB".parse::<Size>().unwrap(), Size(16 << 10));
        assert_eq!("123".parse::<Size>().unwrap(), Size(123));
        assert!("lots".parse::<Size>().unwrap_err().contains("invalid size `lots`"));
        assert!("8XB".parse::<Size>().is_err());
        assert_eq!(Size(16 << 20).to_string(), "16.0 MiB");
    }

    #[test]
    fn durations_parse() {
        assert_eq!("30s".parse::<Duration>().unwrap().0, std::time::Duration::from_secs(30));
        assert_eq!("250ms".parse::<Duration>().unwrap().0, std::time::Duration::from_millis(250));
        assert!("soon".parse::<Duration>().unwrap_err().starts_with("invalid duration `soon`"));
    }
}
