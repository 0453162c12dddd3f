//! AWS's own request signing (SigV4, by AWS's `aws-sigv4` crate) and a
//! client for AWS's JSON APIs — Kinesis Data Streams and SQS, whose
//! actions are POSTs of a JSON body naming the action in `X-Amz-Target`.
//! The aws_lambda backend signs its Invoke calls here; a stream's Kinesis
//! and SQS sources call their services through [`AwsJson`].
//!
//! Credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_SESSION_TOKEN`; a service's endpoint is `AWS_ENDPOINT_URL_<SERVICE>`
//! or `AWS_ENDPOINT_URL` when set (a local server such as moto's), else
//! `https://SERVICE.REGION.amazonaws.com` (a build with the `tls`
//! feature), as AWS's SDKs resolve them.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;

/// SigV4 for one service in one region.
pub struct SigV4 {
    identity: Identity,
    region: String,
    service: String,
}

impl SigV4 {
    /// Signs for `service` in `region` with the environment's credentials.
    pub fn from_env(service: &str, region: &str) -> SigV4 {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let credentials = Credentials::new(
            env("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            env("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        );
        SigV4 { identity: credentials.into(), region: region.to_string(), service: service.to_string() }
    }

    /// The headers that sign a POST of `body` to `url` with `headers`
    /// (each of which is signed too).
    pub fn headers(&self, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Vec<(String, String)>, String> {
        let failed = |e: &dyn std::fmt::Display| format!("signing the request: {e}");
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(body))
            .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

/// The region the environment names (`AWS_REGION`, else
/// `AWS_DEFAULT_REGION`).
pub fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The endpoint for `service` (`sqs`, `kinesis`, `lambda`): the
/// environment's for the service, else the environment's for all, else
/// AWS's in `region`.
pub fn endpoint(service: &str, region: &str) -> String {
    env_endpoint(service).unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
}

/// The endpoint the environment names for `service`, if it names one.
pub fn env_endpoint(service: &str) -> Option<String> {
    let own = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
    [own.as_str(), "AWS_ENDPOINT_URL"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Why a call to an AWS JSON API failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsError {
    /// The service could not be reached, or throttled the call, or failed
    /// on its side (5xx): worth trying again.
    Transient(String),
    /// The service refused the call (4xx), with its error's code and
    /// message: trying again will not help.
    Refused {
        /// The error's code (`ResourceNotFoundException`, ...).
        code: String,
        /// What the service said.
        message: String,
    },
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsError::Transient(m) => f.write_str(m),
            AwsError::Refused { code, message } if message.is_empty() => f.write_str(code),
            AwsError::Refused { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

/// A client of one AWS JSON API: `call("GetRecords", body)` POSTs the body
/// with `X-Amz-Target: PREFIX.GetRecords`, signed.
pub struct AwsJson {
    url: String,
    target: String,
    content_type: &'static str,
    signer: SigV4,
    agent: ureq::Agent,
}

/// The longest one call may take, its reply included (SQS's long polls,
/// at most a second here, are well under it): a service that stops
/// answering is a failure to try again.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl AwsJson {
    /// A client of `service` in `region`, whose actions are named
    /// `target.ACTION`, speaking JSON version `json` (`1.0` for SQS, `1.1`
    /// for Kinesis).
    pub fn new(service: &str, region: &str, target: &str, json: &str) -> AwsJson {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent("fanout")
            .build()
            .into();
        let content_type = if json == "1.0" { "application/x-amz-json-1.0" } else { "application/x-amz-json-1.1" };
        let url = format!("{}/", endpoint(service, region).trim_end_matches('/'));
        AwsJson { url, target: target.to_string(), content_type, signer: SigV4::from_env(service, region), agent }
    }

    /// The endpoint called.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `action` with `body`: the reply's JSON.
    pub fn call(&self, action: &str, body: &serde_json::Value) -> Result<serde_json::Value, AwsError> {
        let body = serde_json::to_vec(body).expect("JSON serializes");
        let target = format!("{}.{action}", self.target);
        let headers = [("content-type", self.content_type), ("x-amz-target", target.as_str())];
        let signed = self.signer.headers(&self.url, &headers, &body).map_err(AwsError::Transient)?;
        let mut request = self.agent.post(&self.url);
        for (k, v) in headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(signed) {
            request = request.header(k, v);
        }
        let mut response =
            request.send(&body[..]).map_err(|e| AwsError::Transient(format!("{} ({action}): {e}", self.url)))?;
        let status = response.status().as_u16();
        let reply = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| AwsError::Transient(format!("{} ({action}): reading the reply: {e}", self.url)))?;
        let json: serde_json::Value = serde_json::from_slice(&reply).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&status) {
            return match json {
                serde_json::Value::Null if !reply.is_empty() => Err(AwsError::Transient(format!(
                    "{} ({action}): the reply is not JSON: {}",
                    self.url,
                    String::from_utf8_lossy(&reply[..reply.len().min(200)])
                ))),
                json => Ok(json),
            };
        }
        // `{"__type": "com.amazonaws...#ResourceNotFoundException", "message": ...}`.
        let code = json["__type"].as_str().and_then(|t| t.rsplit('#').next()).unwrap_or_default().to_string();
        let message = json["message"].as_str().or(json["Message"].as_str()).unwrap_or_default().to_string();
        let throttled = code.contains("Throttl") || code.contains("LimitExceeded") || code == "RequestThrottled";
        match status {
            429 | 500.. => Err(AwsError::Transient(format!("{} ({action}): HTTP {status} {code} {message}", self.url))),
            _ if throttled => Err(AwsError::Transient(format!("{} ({action}): {code}: {message}", self.url))),
            _ => Err(AwsError::Refused {
                code: if code.is_empty() { format!("HTTP {status}") } else { code },
                message: if message.is_empty() { String::from_utf8_lossy(&reply).trim().to_string() } else { message },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_told_by_its_code_and_message() {
        let e = AwsError::Refused { code: "ResourceNotFoundException".into(), message: "no stream".into() };
        assert_eq!(e.to_string(), "ResourceNotFoundException: no stream");
        let e = AwsError::Refused { code: "AccessDenied".into(), message: String::new() };
        assert_eq!(e.to_string(), "AccessDenied");
    }

    #[test]
    fn a_signature_names_the_service_and_region() {
        let signer = SigV4::from_env("kinesis", "eu-west-1");
        let headers = signer.headers("https://kinesis.eu-west-1.amazonaws.com/", &[("x-amz-target", "K.A")], b"{}");
        let headers = headers.unwrap();
        let auth = headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).unwrap();
        assert!(auth.contains("/eu-west-1/kinesis/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-target"), "{auth}");
    }
}
