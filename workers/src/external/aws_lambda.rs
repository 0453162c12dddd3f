//! The aws_lambda backend: functions deployed on AWS Lambda, called with
//! the Invoke API (`POST /2015-03-31/functions/{name}/invocations`,
//! `RequestResponse`), each request signed with SigV4 by AWS's own
//! `aws-sigv4` crate.
//!
//! Its function table: `aws_lambda = "name or ARN"`, and besides the
//! common keys `qualifier` (a version or alias), `region` (else the
//! ARN's, else `AWS_REGION` or `AWS_DEFAULT_REGION`) and `event` (as for
//! lambda). Credentials come from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`; the endpoint is
//! `AWS_ENDPOINT_URL_LAMBDA` or `AWS_ENDPOINT_URL` when set (a local
//! emulator, `fanout serve`), else `https://lambda.REGION.amazonaws.com`
//! (a build with the `tls` feature).
//!
//! Outcomes are the http backend's (`http.rs`): `X-Amz-Function-Error`
//! fails the attempt with the function's `errorType: errorMessage`; 429
//! (`TooManyRequestsException`) and 5xx are retried; another 4xx (404
//! `ResourceNotFoundException`) fails the task. A 413
//! (`RequestTooLargeException`) sends a split reference instead, at once,
//! when the task reads a split.

use std::sync::Arc;

use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalRef, FieldPath};

use crate::aws::SigV4;
use crate::external::event::EventMode;
use crate::external::http::{HttpSpec, Sign, check_url};
use crate::external::settings::Settings;
use crate::external::{Backend, ExternalContext, planned};
use crate::function::{FunctionError, Planned};

/// The aws_lambda backend (`aws_lambda = "name or ARN"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLambda;

/// The settings of an aws_lambda function table, and what the environment
/// adds to them.
struct LambdaTable {
    function: String,
    qualifier: Option<String>,
    region: Option<String>,
    event: EventMode,
    endpoint: Option<String>,
}

impl LambdaTable {
    fn read(s: &mut Settings<'_>) -> Self {
        let function = s.string("aws_lambda").unwrap_or_default().to_string();
        if function.is_empty() {
            s.problem(FieldPath::keys(["aws_lambda"]), "aws_lambda needs a function name or ARN");
        }
        let qualifier = s.string("qualifier").map(str::to_string);
        // The ARN's region, the table's, or the environment's.
        let region = s
            .string("region")
            .map(str::to_string)
            .or_else(|| function.strip_prefix("arn:").and_then(|a| a.split(':').nth(2)).map(str::to_string))
            .filter(|r| !r.is_empty())
            .or_else(crate::aws::env_region);
        let event = s.parse("event").unwrap_or(EventMode::Records);
        let endpoint = match &region {
            Some(r) => Some(crate::aws::endpoint("lambda", r)),
            None => crate::aws::env_endpoint("lambda"),
        };
        LambdaTable { function, qualifier, region, event, endpoint }
    }

    /// The Invoke API URL.
    fn url(&self) -> String {
        let endpoint = self.endpoint.as_deref().unwrap_or_default().trim_end_matches('/');
        let mut url = format!("{endpoint}/2015-03-31/functions/{}/invocations", encode(&self.function));
        if let Some(q) = &self.qualifier {
            url.push_str(&format!("?Qualifier={}", encode(q)));
        }
        url
    }

    /// Problems with what the environment must give: a region, an
    /// endpoint this build can call, credentials.
    fn check_environment(&self, s: &mut Settings<'_>) {
        let at = FieldPath::keys(["aws_lambda"]);
        if self.region.is_none() {
            s.problem(at.clone(), "no region: set region = \"us-east-1\" in the table, or AWS_REGION");
        }
        if let Some(endpoint) = &self.endpoint
            && let Err(m) = check_url(endpoint)
        {
            s.problem(at.clone(), format!("{m} (the endpoint; AWS_ENDPOINT_URL_LAMBDA sets another)"));
        }
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() || std::env::var("AWS_SECRET_ACCESS_KEY").is_err() {
            s.problem(at, "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
        }
    }
}

/// `text` percent-encoded for a URL path segment or query value, as the
/// AWS SDKs encode a function's name or ARN (`:` is `%3A`).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Backend for AwsLambda {
    fn kind(&self) -> &str {
        "aws_lambda"
    }

    fn keys(&self) -> &[&str] {
        &["qualifier", "region", "event"]
    }

    fn check(&self, f: &ExternalCheck<'_>, _: &dyn Environment) -> ExternalChecked {
        let mut s = Settings::new(f.settings);
        let x = LambdaTable::read(&mut s);
        x.check_environment(&mut s);
        if x.event != EventMode::Records && f.stage > 0 {
            s.problem(
                FieldPath::keys(["event"]),
                "only the first stage reads the input's splits; later stages get records (event = \"records\")",
            );
        }
        // The stage is named for the function (an ARN's last part).
        let name = x.function.split(":function:").nth(1).unwrap_or(&x.function);
        let name = name.split(':').next().unwrap_or(name).to_string();
        ExternalChecked { name, problems: s.into_problems() }
    }

    fn plan(&self, f: &ExternalRef, ctx: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let mut s = Settings::new(&f.settings);
        let x = LambdaTable::read(&mut s);
        x.check_environment(&mut s);
        s.finish()?;
        let keyed = ctx.key.is_some();
        if keyed && x.event != EventMode::Records {
            return Err(FunctionError::permanent("a keyed stage gets its partitions as records: remove event"));
        }
        let signer = LambdaSigner(SigV4::from_env("lambda", x.region.as_deref().unwrap_or_default()));
        let input = ctx.input.clone();
        let output = f.schema.clone().unwrap_or_else(|| input.clone());
        let headers = vec![("x-amz-invocation-type".to_string(), "RequestResponse".to_string())];
        let spec = HttpSpec::new(vec![x.url()], headers, ctx.events(x.event, output.clone())).signed(Box::new(signer));
        Ok(planned(Arc::new(spec), input, output, keyed))
    }
}

/// SigV4 for the `lambda` service.
struct LambdaSigner(SigV4);

impl Sign for LambdaSigner {
    fn sign(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, FunctionError> {
        let mut signed: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        signed.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.0.headers(url, &signed, body).map_err(FunctionError::permanent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns_are_encoded_as_the_sdks_do() {
        assert_eq!(encode("word_count"), "word_count");
        assert_eq!(
            encode("arn:aws:lambda:eu-west-1:123456789012:function:f"),
            "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Af"
        );
        assert_eq!(encode("$LATEST"), "%24LATEST");
    }
}
