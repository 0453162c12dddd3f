//! The http backend: functions behind HTTP endpoints — `fanout serve`,
//! Google's Functions Framework, Knative, OpenFaaS, Cloud Run, any server
//! that takes the event contract (`event.rs`) in a POST and answers
//! `{"records": [...]}`.
//!
//! Its function table: `http = "http://host:port/path"`, or a list of
//! URLs to spread invocations over, and besides the common keys `headers`
//! (a table of header values; `${NAME}` is replaced by the environment
//! variable `NAME`) and `event` (as for lambda: "records", "split",
//! "auto").
//!
//! Outcomes: 2xx succeeds, unless it carries `X-Amz-Function-Error` (a
//! function error, as Lambda reports one: retried); another 4xx is
//! permanent, except 408 and 429; 408, 429, 5xx, refused or broken
//! connections and timeouts are retried with the platform's backoff, no
//! sooner than a `Retry-After` says, and the endpoint that failed is
//! avoided for a while by every slot (briefly after a 429). Each container (a worker slot's
//! instance of the function) keeps its own keep-alive connections, so the
//! pool is sized to the stage's concurrency. The deadline
//! (`platform.timeout`) is the client's timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalRef, FieldPath};
use serde_json::Value;

use crate::external::event::{EventMode, EventSpec, preview, records_read};
use crate::external::settings::Settings;
use crate::external::{Backend, Container, ExternalContext, Launch, planned};
use crate::function::{FunctionError, Invocation, Planned};

/// How long an endpoint that failed is avoided, unless it said how long.
const AVOID: Duration = Duration::from_secs(1);

/// How long an endpoint that throttled (429) is avoided, unless it said.
const THROTTLED: Duration = Duration::from_millis(100);

/// How long to wait for a connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The http backend (`http = "url"` or a list of URLs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

/// The settings of an http function table.
struct HttpSettings {
    urls: Vec<String>,
    headers: Vec<(String, String)>,
    event: EventMode,
}

impl HttpSettings {
    fn read(s: &mut Settings<'_>, map: &serde_json::Map<String, Value>) -> Self {
        let at = FieldPath::keys(["http"]);
        let urls = match map.get("http") {
            Some(Value::String(u)) => vec![u.clone()],
            Some(Value::Array(items)) => {
                let mut urls = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(u) => urls.push(u.to_string()),
                        None => s.problem(at.index(i), format!("an endpoint is a URL string, not {item}")),
                    }
                }
                if items.is_empty() {
                    s.problem(at.clone(), "http needs at least one URL");
                }
                urls
            }
            _ => {
                s.problem(at.clone(), "http needs a URL, or a list of them: \"http://host:port/path\"");
                Vec::new()
            }
        };
        for (i, u) in urls.iter().enumerate() {
            let field = if matches!(map.get("http"), Some(Value::Array(_))) { at.index(i) } else { at.clone() };
            if let Err(m) = check_url(u) {
                s.problem(field, m);
            }
        }
        let mut headers = Vec::new();
        match map.get("headers") {
            None => {}
            Some(Value::Object(h)) => {
                for (k, v) in h {
                    match v.as_str() {
                        Some(v) => headers.push((k.clone(), v.to_string())),
                        None => {
                            s.problem(FieldPath::keys(["headers", k]), format!("a header's value is a string, not {v}"))
                        }
                    }
                }
            }
            Some(v) => s.problem(FieldPath::keys(["headers"]), format!("`headers` must be a table, not {v}")),
        }
        HttpSettings { urls, headers, event: s.parse("event").unwrap_or(EventMode::Records) }
    }
}

/// Whether `url` is one this build can call.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if let Some(r) = url.strip_prefix("https://") {
        if !cfg!(feature = "tls") {
            return Err(format!("`{url}`: https endpoints need fanout built with the `tls` feature"));
        }
        r
    } else {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    };
    if rest.split('/').next().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

/// `${NAME}` in `value` replaced by the environment variable `NAME`.
fn expand(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| format!("`{value}`: `${{` without a closing `}}`"))?;
        let name = &rest[i + 2..i + end];
        out.push_str(&std::env::var(name).map_err(|_| format!("`{value}`: the variable {name} is not set"))?);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Backend for Http {
    fn kind(&self) -> &str {
        "http"
    }

    fn keys(&self) -> &[&str] {
        &["headers", "event"]
    }

    fn check(&self, f: &ExternalCheck<'_>, _: &dyn Environment) -> ExternalChecked {
        let mut s = Settings::new(f.settings);
        let x = HttpSettings::read(&mut s, f.settings);
        if x.event != EventMode::Records && f.stage > 0 {
            s.problem(
                FieldPath::keys(["event"]),
                "only the first stage reads the input's splits; later stages get records (event = \"records\")",
            );
        }
        for (k, v) in &x.headers {
            if let Err(m) = expand(v) {
                s.problem(FieldPath::keys(["headers", k]), m);
            }
        }
        // The stage is named for the endpoint's last path segment.
        let name = x.urls.first().map_or_else(String::new, |u| {
            let path = u.split("://").nth(1).unwrap_or(u);
            let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or(path);
            last.split(':').next().unwrap_or(last).to_string()
        });
        ExternalChecked { name, problems: s.into_problems() }
    }

    fn plan(&self, f: &ExternalRef, ctx: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let mut s = Settings::new(&f.settings);
        let x = HttpSettings::read(&mut s, &f.settings);
        s.finish()?;
        let keyed = ctx.key.is_some();
        if keyed && x.event != EventMode::Records {
            return Err(FunctionError::permanent("a keyed stage gets its partitions as records: remove event"));
        }
        let mut headers = Vec::with_capacity(x.headers.len());
        for (k, v) in x.headers {
            headers.push((k, expand(&v).map_err(FunctionError::permanent)?));
        }
        let input = ctx.input.clone();
        let output = f.schema.clone().unwrap_or_else(|| input.clone());
        let spec = HttpSpec::new(x.urls, headers, ctx.events(x.event, output.clone()));
        Ok(planned(Arc::new(spec), input, output, keyed))
    }
}

/// Signs a request: the headers to add for its URL, headers and body
/// (the aws_lambda backend's SigV4).
pub(crate) trait Sign: Send + Sync {
    fn sign(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, FunctionError>;
}

/// An http function's settings and the endpoints' health, shared by its
/// containers.
pub(crate) struct HttpSpec {
    urls: Vec<String>,
    headers: Vec<(String, String)>,
    events: EventSpec,
    /// Per endpoint: avoided until then, after a failure.
    avoid: Mutex<Vec<Option<Instant>>>,
    /// Signs each request.
    signer: Option<Box<dyn Sign>>,
    /// A 413 is answered by sending a split reference instead of the
    /// records, at once (Lambda's payload limit is the platform's).
    split_on_413: bool,
}

impl HttpSpec {
    /// An http function calling `urls` with `headers`.
    pub(crate) fn new(urls: Vec<String>, headers: Vec<(String, String)>, events: EventSpec) -> Self {
        let avoid = Mutex::new(vec![None; urls.len()]);
        HttpSpec { urls, headers, events, avoid, signer: None, split_on_413: false }
    }

    /// The same, each request signed by `signer`, and a 413 answered with
    /// a split reference.
    pub(crate) fn signed(mut self, signer: Box<dyn Sign>) -> Self {
        self.signer = Some(signer);
        self.split_on_413 = true;
        self
    }

    /// The endpoint for attempt `attempt` of `task`: tasks spread over the
    /// endpoints, a retry goes to the next one, and one avoided after a
    /// failure is passed over while another is not.
    fn endpoint(&self, task: u64, attempt: u32) -> usize {
        let n = self.urls.len();
        let first = (task as usize).wrapping_add(attempt as usize - 1) % n;
        let now = Instant::now();
        let avoid = self.avoid.lock().expect("not poisoned");
        (0..n)
            .map(|i| (first + i) % n)
            .find(|&i| avoid[i].is_none_or(|t| t <= now))
            .unwrap_or_else(|| (0..n).min_by_key(|&i| avoid[i]).unwrap_or(first))
    }

    /// Endpoint `i` failed: avoid it for `how_long`.
    fn failed(&self, i: usize, how_long: Duration) {
        self.avoid.lock().expect("not poisoned")[i] = Some(Instant::now() + how_long);
    }
}

impl Launch for HttpSpec {
    fn start(self: Arc<Self>) -> Result<Box<dyn Container>, FunctionError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_idle_connections_per_host(2)
            .user_agent("fanout")
            .build()
            .into();
        Ok(Box::new(Client { spec: self, agent, decoder: None, read: None }))
    }

    fn reads_split(&self) -> bool {
        self.events.event == EventMode::Split
    }

    fn remote(&self) -> bool {
        true
    }
}

/// A container of an http function: a keep-alive client.
struct Client {
    spec: Arc<HttpSpec>,
    agent: ureq::Agent,
    decoder: Option<arrow_json::reader::Decoder>,
    /// The records the function said it read from its split, last call.
    read: Option<u64>,
}

impl Container for Client {
    fn records_read(&self) -> Option<u64> {
        self.read
    }

    fn call(
        &mut self,
        inv: &Invocation<'_>,
        input: &[arrow_array::RecordBatch],
    ) -> Result<Vec<arrow_array::RecordBatch>, FunctionError> {
        let spec = self.spec.clone();
        self.read = None;
        let body = spec.events.event(inv, input)?;
        let i = spec.endpoint(inv.task, inv.attempt);
        match self.post(inv, i, &body)? {
            Posted::Records(batches) => Ok(batches),
            // Too large for the platform: the function reads its split.
            Posted::TooLarge(_)
                if spec.split_on_413 && inv.split.is_some() && spec.events.event != EventMode::Split =>
            {
                let body = spec.events.event_as(inv, input, EventMode::Split)?;
                match self.post(inv, i, &body)? {
                    Posted::Records(batches) => Ok(batches),
                    Posted::TooLarge(e) => Err(e),
                }
            }
            Posted::TooLarge(e) => Err(e),
        }
    }
}

/// What a POST that did not fail got.
enum Posted {
    Records(Vec<arrow_array::RecordBatch>),
    /// 413: the event was too large for the host.
    TooLarge(FunctionError),
}

impl Client {
    /// POSTs `body` to endpoint `i`; a failure is classified as permanent
    /// or not, with the host's `Retry-After`.
    fn post(&mut self, inv: &Invocation<'_>, i: usize, body: &[u8]) -> Result<Posted, FunctionError> {
        let spec = self.spec.clone();
        let url = &spec.urls[i];
        let started = Instant::now();
        let mut request = self.agent.post(url).header("content-type", "application/json");
        for (k, v) in &spec.headers {
            request = request.header(k, v);
        }
        if let Some(signer) = &spec.signer {
            for (k, v) in signer.sign(url, &spec.headers, body)? {
                request = request.header(k, v);
            }
        }
        if let Some(deadline) = inv.deadline {
            let left = deadline.saturating_duration_since(started).max(Duration::from_millis(1));
            request = request.config().timeout_global(Some(left)).build();
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(e) => {
                spec.failed(i, AVOID);
                return Err(FunctionError::transient(match e {
                    ureq::Error::Timeout(_) => format!("{url}: timed out after {}", took(started)),
                    e => format!("{url}: {e}"),
                }));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let function_error = response.headers().contains_key("x-amz-function-error");
        // An AWS service names its error in a header (`ResourceNotFoundException`,
        // sometimes followed by `:` and more).
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(':').next())
            .map(str::to_string);
        let error_text = |body: &[u8]| {
            let text = error_text(body);
            match &error_type {
                Some(t) if !t.is_empty() && !text.starts_with(t.as_str()) => format!("{t}: {text}"),
                _ => text,
            }
        };
        let limit = spec.events.payload_limit;
        let body = match response.body_mut().with_config().limit(limit + 1).read_to_vec() {
            Ok(b) => b,
            Err(e) => {
                spec.failed(i, AVOID);
                return Err(FunctionError::transient(match e {
                    ureq::Error::Timeout(_) => format!("{url}: timed out after {} reading the response", took(started)),
                    ureq::Error::BodyExceedsLimit(_) => {
                        return Err(FunctionError::permanent(format!(
                            "{url}: the response is over the payload limit of {limit} bytes (platform.payload_limit)"
                        )));
                    }
                    e => format!("{url}: reading the response: {e}"),
                }));
            }
        };
        match status {
            200..=299 if function_error => Err(FunctionError::transient(format!("{url}: {}", error_text(&body)))),
            200..=299 => {
                // A function asked to write its output may have: the pieces.
                let written = inv.shuffle_to.and_then(|to| crate::shuffle::parse_pieces_reply(&body, &to.path));
                let batches = match written {
                    Some(pieces) => vec![crate::shuffle::pieces_batch(&pieces)],
                    None => spec.events.records(&body, &mut self.decoder)?,
                };
                if inv.split.is_some() && spec.events.event != EventMode::Records || spec.split_on_413 {
                    self.read = records_read(&body);
                }
                Ok(Posted::Records(batches))
            }
            413 => Ok(Posted::TooLarge(FunctionError::permanent(format!(
                "{url}: HTTP 413: {}; lower input.chunk_size{}",
                error_text(&body),
                if inv.split.is_some() { ", or set event = \"auto\" or \"split\"" } else { "" }
            )))),
            408 | 429 | 500..=599 => {
                // A throttled host is busy for a moment, not down.
                let avoid = if status == 429 { THROTTLED } else { AVOID };
                spec.failed(i, retry_after.unwrap_or(avoid));
                Err(FunctionError::transient(format!("{url}: HTTP {status}: {}", error_text(&body)))
                    .retry_after(retry_after))
            }
            _ => Err(FunctionError::permanent(format!("{url}: HTTP {status}: {}", error_text(&body)))),
        }
    }
}

/// A reply's error: `errorType: errorMessage` when it is a Lambda-style
/// error object, else the body's start.
fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LambdaError {
        error_type: Option<String>,
        error_message: Option<String>,
        /// An AWS service's error (`{"message": ...}`).
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<LambdaError>(body) {
        Ok(LambdaError { error_type: Some(t), error_message: Some(m), .. }) => format!("{t}: {m}"),
        Ok(LambdaError { error_message: Some(m), .. } | LambdaError { message: Some(m), .. }) => m,
        _ if body.is_empty() => "(no body)".to_string(),
        _ => preview(body),
    }
}

/// Time since `started`, to the millisecond.
fn took(started: Instant) -> String {
    humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers_are_checked() {
        assert!(check_url("http://127.0.0.1:8080/functions/wc").is_ok());
        assert!(check_url("ftp://x").unwrap_err().contains("not an http"));
        assert!(check_url("http:///x").unwrap_err().contains("no host"));
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand("Bearer ${PATH}!").unwrap(), format!("Bearer {path}!"));
        assert!(expand("${FANOUT_NOT_SET_ANYWHERE}").unwrap_err().contains("is not set"));
        assert!(expand("${OPEN").unwrap_err().contains("without a closing"));
    }

    #[test]
    fn tasks_spread_over_endpoints_and_avoid_failed_ones() {
        let spec = HttpSpec::new(
            vec!["a".into(), "b".into(), "c".into()],
            Vec::new(),
            EventSpec {
                event: EventMode::Records,
                input_schema: Arc::new(arrow_schema::Schema::empty()),
                output_schema: Arc::new(arrow_schema::Schema::empty()),
                input_format: None,
                csv_header: false,
                params: "{}".into(),
                key: None,
                payload_limit: 1 << 20,
            },
        );
        assert_eq!((0..6).map(|t| spec.endpoint(t, 1)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
        // A retry goes to the next endpoint.
        assert_eq!(spec.endpoint(0, 2), 1);
        spec.failed(1, Duration::from_secs(60));
        assert_eq!(spec.endpoint(1, 1), 2);
        assert_eq!(spec.endpoint(0, 2), 2);
        spec.failed(0, Duration::from_secs(30));
        spec.failed(2, Duration::from_secs(90));
        // All avoided: the one back soonest.
        assert_eq!(spec.endpoint(2, 1), 0);
    }
}
