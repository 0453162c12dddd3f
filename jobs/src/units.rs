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

/// A byte count, or a string to parse into `T`, for sizes written either
/// way (`expected` says what else was found).
fn bytes_or_parsed<'de, D, T>(d: D, bytes: impl FnOnce(u64) -> T, expected: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d).map_err(|_| serde::de::Error::custom(expected))? {
        Raw::Int(n) => Ok(bytes(n)),
        Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bytes_or_parsed(d, Size, "expected a number of bytes or a size such as \"16MiB\"")
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A split size, or a range of them for a calibration run: "16MiB", a
/// byte count, or "64KiB..4MiB" (splits' sizes spread over the range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SizeRange {
    /// The size, or the range's smallest.
    pub min: Size,
    /// The range's largest; `None` for one size.
    pub max: Option<Size>,
}

impl SizeRange {
    /// Whether it is a size a job can split by: at least a byte, and a
    /// range from small to large.
    pub fn check(&self) -> Result<(), String> {
        if self.min.0 == 0 {
            return Err("chunk_size must be at least 1 byte".to_string());
        }
        match self.max {
            Some(max) if max <= self.min => Err(format!("chunk_size range {self} must go from small to large")),
            _ => Ok(()),
        }
    }
}

impl FromStr for SizeRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            Some((lo, hi)) => Ok(SizeRange { min: lo.parse()?, max: Some(hi.parse()?) }),
            None => Ok(SizeRange { min: s.parse()?, max: None }),
        }
    }
}

impl fmt::Display for SizeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(max) => write!(f, "{}..{}", self.min, max),
            None => write!(f, "{}", self.min),
        }
    }
}

impl<'de> Deserialize<'de> for SizeRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let one = |n| SizeRange { min: Size(n), max: None };
        bytes_or_parsed(d, one, "expected a number of bytes, a size such as \"16MiB\", or a range \"64KiB..4MiB\"")
    }
}

impl Serialize for SizeRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.max {
            Some(max) => s.serialize_str(&format!("{}..{}", self.min.0, max.0)),
            None => s.serialize_u64(self.min.0),
        }
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
