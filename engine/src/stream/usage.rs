//! What a stream asked of the service it reads, and what that costs on
//! the service's own price list, next to the functions' cost.
//!
//! Prices as AWS published them (read 2026-12-08; us-east-1, on-demand,
//! no free tier):
//! - Kinesis Data Streams, provisioned mode: $0.015 per shard-hour, and
//!   $0.014 per 1,000,000 PUT payload units (a record is one unit per 25 KB
//!   of its data, rounded up: what its producer pays to put it). Reading
//!   with GetRecords is not charged.
//! - SQS, standard queue: $0.40 per 1,000,000 requests, each 64 KB of a
//!   request's payload counting as one request. Priced here are the
//!   consumer's own requests, as Lambda's poller would make them:
//!   ReceiveMessage (empty ones too) and DeleteMessageBatch. The
//!   producer's sends depend on how it batches and are not included.

use serde::{Deserialize, Serialize};

use crate::summary::{SourceCharge, SourceCost};

/// The Kinesis price of a shard for an hour, USD.
const SHARD_HOUR: f64 = 0.015;
/// The Kinesis price of a PUT payload unit, USD.
const PUT_UNIT: f64 = 0.014 / 1e6;
/// The bytes of a record's data one PUT payload unit covers.
const PUT_UNIT_BYTES: usize = 25 * 1024;
/// The SQS price of a request, USD.
const SQS_REQUEST: f64 = 0.40 / 1e6;
/// The bytes of a request's payload one SQS request covers.
const SQS_REQUEST_BYTES: usize = 64 * 1024;

/// What a stream asked of its service, over the run and its resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    /// Kinesis: shards open, times the milliseconds they were read.
    #[serde(default)]
    pub(crate) shard_ms: u64,
    /// Kinesis: PUT payload units of the records read.
    #[serde(default)]
    pub(crate) put_units: u64,
    /// SQS: billed requests (ReceiveMessage and DeleteMessageBatch).
    #[serde(default)]
    pub(crate) requests: u64,
}

impl Usage {
    /// This usage and `other` together.
    pub(crate) fn plus(self, other: Usage) -> Usage {
        Usage {
            shard_ms: self.shard_ms + other.shard_ms,
            put_units: self.put_units + other.put_units,
            requests: self.requests + other.requests,
        }
    }

    /// The PUT payload units of a record of `bytes`.
    pub(crate) fn put_units_of(bytes: usize) -> u64 {
        bytes.div_ceil(PUT_UNIT_BYTES).max(1) as u64
    }

    /// The SQS requests a call with a payload of `bytes` is billed as.
    pub(crate) fn requests_of(bytes: usize) -> u64 {
        bytes.div_ceil(SQS_REQUEST_BYTES).max(1) as u64
    }

    /// Its price, for a source of `service` (`kinesis` or `sqs`); none for
    /// one this does not price.
    pub(crate) fn cost(&self, service: &str) -> Option<SourceCost> {
        let charge = |item: &str, quantity: f64, price: f64| SourceCharge {
            item: item.to_string(),
            quantity,
            price,
            usd: quantity * price,
        };
        let (charges, note) = match service {
            "kinesis" => (
                vec![
                    charge("shard-hours", self.shard_ms as f64 / 3.6e6, SHARD_HOUR),
                    charge("PUT payload units", self.put_units as f64, PUT_UNIT),
                ],
                "Kinesis Data Streams, provisioned, us-east-1: $0.015 a shard-hour (the shards read, for as long \
                 as they were read), $0.014 per 1M PUT payload units (25 KB of a record each, what its producer \
                 pays); prices read 2026-12-08",
            ),
            "sqs" => (
                vec![charge("requests", self.requests as f64, SQS_REQUEST)],
                "SQS standard queue, us-east-1: $0.40 per 1M requests (64 KB each), the consumer's ReceiveMessage \
                 and DeleteMessageBatch calls; the producer's sends are not included; prices read 2026-12-08",
            ),
            _ => return None,
        };
        let usd = charges.iter().map(|c| c.usd).sum();
        Some(SourceCost { service: service.to_string(), charges, usd, note: note.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_is_priced_by_shard_hours_and_put_units() {
        // Two shards read for half an hour; 3 M records of 1 KB and one
        // of 60 KB (three units).
        let usage =
            Usage { shard_ms: 2 * 1_800_000, put_units: 3_000_000 + Usage::put_units_of(60 * 1024), requests: 0 };
        let cost = usage.cost("kinesis").unwrap();
        assert_eq!(cost.charges[0].quantity, 1.0);
        assert_eq!(cost.charges[1].quantity, 3_000_003.0);
        // 1 shard-hour at $0.015, and 3,000,003 units at $0.014 per 1 M.
        let by_hand = 0.015 + 3_000_003.0 * 0.014 / 1e6;
        assert!((cost.usd - by_hand).abs() < 1e-12, "{} vs {by_hand}", cost.usd);
    }

    #[test]
    fn sqs_is_priced_by_requests_of_64_kb() {
        assert_eq!(Usage::requests_of(0), 1);
        assert_eq!(Usage::requests_of(64 * 1024), 1);
        assert_eq!(Usage::requests_of(64 * 1024 + 1), 2);
        let cost = Usage { requests: 2_500_000, ..Usage::default() }.cost("sqs").unwrap();
        assert!((cost.usd - 1.0).abs() < 1e-12);
        assert!(Usage::default().cost("redis").is_none());
    }
}
