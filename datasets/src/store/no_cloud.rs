//! A build without object storage clients: every URL is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Requests, Stores};

pub(super) const KEYS_HINT: &str = " (this build has no object storage: rebuild with the `cloud` feature)";

pub(super) fn known_key(_: &str) -> bool {
    false
}

pub(super) fn build(base: &str, _: &BTreeMap<String, String>, _: &Arc<Requests>) -> Result<Stores, String> {
    Err(format!("`{base}`: this build of fanout has no object storage; rebuild it with the `cloud` feature"))
}
