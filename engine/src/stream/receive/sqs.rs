//! An SQS queue, read with SQS's JSON API: ReceiveMessage (up to 10
//! messages a call, a short long-poll, each message hidden for the
//! visibility timeout) and DeleteMessageBatch once the messages are
//! spooled. A message whose delete was cut short by a crash comes again
//! once its visibility timeout has passed, and is known by its id. Each
//! message's body holds the records (one, or lines of them).

use std::time::{Duration, Instant};

use fanout_workers::aws::AwsJson;
use serde_json::{Value, json};

use super::{Fault, Message, Receiver};
use crate::stream::usage::Usage;

/// The most messages one ReceiveMessage returns.
const MOST: usize = 10;

/// An SQS queue's messages.
pub(crate) struct Sqs {
    api: AwsJson,
    url: String,
    visibility: Duration,
    usage: Usage,
}

impl Sqs {
    /// The queue at `url`, in `region`.
    pub(crate) fn new(url: &str, region: &str, visibility: Duration) -> Sqs {
        let api = AwsJson::new("sqs", region, "AmazonSQS", "1.0");
        Sqs { api, url: url.to_string(), visibility, usage: Usage::default() }
    }
}

impl Receiver for Sqs {
    fn describe(&self) -> String {
        format!("sqs queue {}", self.url)
    }

    fn resume(&mut self, _: &std::collections::BTreeMap<String, Value>, _: i64) -> Result<(), Fault> {
        // The queue is there, and can be read.
        self.api.call("GetQueueAttributes", &json!({ "QueueUrl": self.url, "AttributeNames": ["QueueArn"] }))?;
        Ok(())
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, Fault> {
        let began = Instant::now();
        let mut out = Vec::new();
        loop {
            // A long poll of whole seconds, when there is a second to wait.
            let poll = wait.saturating_sub(began.elapsed()).as_secs().min(20);
            let asked = max.saturating_sub(out.len()).clamp(1, MOST);
            let body = json!({
                "QueueUrl": self.url,
                "MaxNumberOfMessages": asked,
                "VisibilityTimeout": self.visibility.as_secs().max(1),
                "WaitTimeSeconds": poll,
                "MessageSystemAttributeNames": ["SentTimestamp"],
            });
            let reply = self.api.call("ReceiveMessage", &body)?;
            let messages = reply["Messages"].as_array().cloned().unwrap_or_default();
            let payload: usize = messages.iter().map(|m| m["Body"].as_str().map_or(0, str::len)).sum();
            self.usage.requests += Usage::requests_of(payload);
            let got = messages.len();
            for m in messages {
                let (Some(id), Some(handle)) = (m["MessageId"].as_str(), m["ReceiptHandle"].as_str()) else {
                    continue;
                };
                let body = m["Body"].as_str().unwrap_or_default().as_bytes().to_vec();
                let sent_ms = m["Attributes"]["SentTimestamp"].as_str().and_then(|t| t.parse().ok());
                let (id, ack) = (Some(id.to_string()), Some(handle.to_string()));
                out.push(Message { id, ack, partition: None, body, sent_ms, file: None });
            }
            // A full reply may have more behind it, worth asking for while
            // there is time.
            if out.len() >= max || began.elapsed() >= wait || (got < asked && !out.is_empty()) {
                return Ok(out);
            }
            if got == 0 {
                std::thread::sleep(Duration::from_millis(50).min(wait));
            }
        }
    }

    fn cursor(&self, _: &str) -> Option<Value> {
        None
    }

    fn acknowledge(&mut self, acks: &[String]) -> Result<(), Fault> {
        for chunk in acks.chunks(MOST) {
            let entries: Vec<Value> =
                chunk.iter().enumerate().map(|(i, h)| json!({ "Id": i.to_string(), "ReceiptHandle": h })).collect();
            let reply = self.api.call("DeleteMessageBatch", &json!({ "QueueUrl": self.url, "Entries": entries }))?;
            self.usage.requests += 1;
            // A handle gone stale (a message received again since) fails
            // alone: its message comes again and is known by its id.
            if let Some(failed) = reply["Failed"].as_array()
                && let Some(f) = failed.iter().find(|f| f["SenderFault"].as_bool() == Some(false))
            {
                return Err(Fault::Transient(format!("DeleteMessageBatch: {}", f["Message"])));
            }
        }
        Ok(())
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn redelivery(&self) -> Duration {
        self.visibility * 2
    }
}
