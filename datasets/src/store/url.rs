//! Object storage URLs: whether a name is one, its base and key, and
//! whether it names an object that can be written.

use crate::error::{Error, Result};

/// Whether `s` is a URL (`scheme://...`) rather than a local path.
pub fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
    })
}

/// The local path of a `file://` URL, or `s` unchanged.
pub fn local_path(s: &str) -> &str {
    s.strip_prefix("file://").unwrap_or(s)
}

/// Checks that the URL `url` names an object that can be written: a
/// scheme of an object store that takes writes (not http(s)) and a
/// bucket; else says why not.
pub fn writable(url: &str) -> std::result::Result<(), String> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if !SCHEMES.contains(&scheme) {
        return Err(format!("unknown storage scheme `{scheme}://`; expected s3, gs or az"));
    }
    if scheme.starts_with("http") {
        return Err(format!("`{scheme}://` cannot be written; write to s3://, gs:// or az://"));
    }
    let (_, key) = split_url(url).map_err(|e| e.to_string())?;
    if key.is_empty() || key.ends_with('/') {
        return Err(format!("no object named: expected {scheme}://BUCKET/KEY, with a key not ending in /"));
    }
    Ok(())
}

/// The schemes of object stores.
pub(crate) const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https"];

/// `scheme://authority` and the key after it.
pub(crate) fn split_url(url: &str) -> Result<(&str, &str)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Error::invalid(url, "not a URL"))?;
    let authority = rest.find('/').unwrap_or(rest.len());
    if authority == 0 {
        return Err(Error::invalid(url, format!("no bucket: expected {scheme}://BUCKET/KEY")));
    }
    let base = &url[..scheme.len() + 3 + authority];
    Ok((base, rest[authority..].trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_base_and_key() {
        assert!(is_url("s3://b/k") && is_url("file:///tmp/x") && !is_url("data/x.csv") && !is_url("://x"));
        assert_eq!(split_url("s3://bucket/a/b.csv").unwrap(), ("s3://bucket", "a/b.csv"));
        assert_eq!(split_url("https://h:8080/x").unwrap(), ("https://h:8080", "x"));
        assert_eq!(split_url("s3://bucket").unwrap(), ("s3://bucket", ""));
        assert!(split_url("s3:///key").unwrap_err().to_string().contains("no bucket"));
        assert_eq!(local_path("file:///tmp/x"), "/tmp/x");
    }
}
