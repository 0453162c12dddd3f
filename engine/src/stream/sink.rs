//! Where a stream's committed files go besides its output directory:
//! a prefix in object storage (`output.path = "s3://bucket/out/"`: the
//! files are kept in the run directory's `out/`, and each is uploaded once
//! committed, as an object of the same name), standard output
//! (`output.path = "-"`: copied there) and an HTTP sink (`output.post`: each file POSTed, its body
//! the file, with `Idempotency-Key: JOB/FILE`, tried again on a failure
//! that may pass). Each file delivered is noted in the run directory's
//! `sent` log (fsync'ed), so a replay after `kill -9` does not deliver it
//! again — but for a file delivered and not yet noted when the run was
//! killed, which goes again with the same key.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fanout_datasets::store::Storage;

use fanout_datasets::Format;
use fanout_jobs::Plan;

use crate::error::EngineError;

/// The log of files delivered, in the run directory.
const SENT: &str = "sent";

/// A stream's sinks.
pub(super) struct Sinks {
    stdout: bool,
    post: Option<Post>,
    /// A prefix in object storage, and the storage to reach it.
    store: Option<(String, Arc<Storage>)>,
    log: PathBuf,
    sent: HashSet<String>,
}

/// An HTTP sink.
struct Post {
    url: String,
    job: String,
    content_type: &'static str,
    agent: ureq::Agent,
}

/// How many times a POST is tried before the stream stops.
const TRIES: u32 = 8;

impl Sinks {
    /// The sinks of `plan`'s output (`stdout`: its path was `-`; `store`:
    /// it was this prefix in object storage), for a run in `run_dir`; none
    /// when it has none.
    pub(super) fn new(plan: &Plan, stdout: bool, store: Option<String>, run_dir: &Path) -> Option<Sinks> {
        let post = plan.output.post.as_ref().map(|url| Post {
            url: url.clone(),
            job: plan.name.clone(),
            content_type: match plan.output.format {
                Format::Jsonl => "application/x-ndjson",
                Format::Csv => "text/csv",
                _ => "application/octet-stream",
            },
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(Duration::from_secs(60)))
                .user_agent("fanout")
                .build()
                .into(),
        });
        if !stdout && post.is_none() && store.is_none() {
            return None;
        }
        let store = store.map(|prefix| (prefix, plan.storage.clone()));
        let log = run_dir.join(SENT);
        let sent = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
        Some(Sinks { stdout, post, store, log, sent })
    }

    /// Delivers the committed file `path`, unless it was before.
    pub(super) fn deliver(&mut self, path: &Path) -> Result<(), EngineError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if self.sent.contains(&name) {
            return Ok(());
        }
        if let Some((prefix, storage)) = &self.store {
            // A file of any size, as one object (a multipart upload when
            // large); written again the same by a replay.
            let url = format!("{prefix}{name}");
            storage.upload(path, &url, false, None, &mut |_| Ok(())).map_err(EngineError::Output)?;
        }
        if !self.stdout && self.post.is_none() {
            return self.note(name);
        }
        let body = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        if self.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(&body).and_then(|()| out.flush()).map_err(|e| EngineError::io("standard output", e))?;
        }
        if let Some(post) = &self.post {
            post.send(&name, &body)?;
        }
        self.note(name)
    }

    /// Notes that file `name` was delivered.
    fn note(&mut self, name: String) -> Result<(), EngineError> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| EngineError::io(&self.log, e))?;
        writeln!(log, "{name}").and_then(|()| log.sync_data()).map_err(|e| EngineError::io(&self.log, e))?;
        self.sent.insert(name);
        Ok(())
    }
}

impl Post {
    /// POSTs file `name`'s `body`, trying again on a connection failure,
    /// 429 or 5xx (after `Retry-After` when the server says), up to
    /// `TRIES` times.
    fn send(&self, name: &str, body: &[u8]) -> Result<(), EngineError> {
        let key = format!("{}/{name}", self.job);
        let failed = |why: String| EngineError::Stream(format!("output.post {}: {name}: {why}", self.url));
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt.min(6)).min(Duration::from_secs(5)));
            }
            let sent = self
                .agent
                .post(&self.url)
                .header("content-type", self.content_type)
                .header("idempotency-key", &key)
                .send(body);
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = response.status().as_u16();
            let text = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
            match status {
                200..=299 => return Ok(()),
                429 | 500.. => {
                    if let Some(wait) = response.headers().get("retry-after").and_then(|v| v.to_str().ok()) {
                        let wait = wait.trim().parse::<u64>().unwrap_or(1).min(30);
                        std::thread::sleep(Duration::from_secs(wait));
                    }
                    last = format!("HTTP {status}: {}", text.trim());
                }
                _ => return Err(failed(format!("HTTP {status}: {}", text.trim()))),
            }
        }
        Err(failed(format!("{last} (tried {TRIES} times)")))
    }
}
