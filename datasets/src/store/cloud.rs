//! The clients, built with a connector that counts their requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{
    ClientConfigKey, ClientOptions, HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;

use super::{Requests, Stores};

pub(super) const KEYS_HINT: &str = " (S3: endpoint, region, access_key_id, secret_access_key, session_token, allow_http, ...; \
     GCS: service_account, ...; Azure: account_name, access_key, ...)";

/// Whether some client takes `key`.
pub(super) fn known_key(key: &str) -> bool {
    key.parse::<AmazonS3ConfigKey>().is_ok()
        || key.parse::<GoogleConfigKey>().is_ok()
        || key.parse::<AzureConfigKey>().is_ok()
        || key.parse::<ClientConfigKey>().is_ok()
}

/// The clients of `base` (`scheme://authority`).
pub(super) fn build(
    base: &str,
    options: &BTreeMap<String, String>,
    requests: &Arc<Requests>,
) -> Result<Stores, String> {
    let scheme = base.split_once("://").map_or(base, |(s, _)| s);
    let counting = Counting(requests.clone());
    let plain = |store: Arc<dyn ObjectStore>| Stores { object: store, multipart: None };
    let built: object_store::Result<Stores> = match scheme {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(base);
            for (k, v) in options {
                if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            // S3's multipart uploads are driven part by part, their ids
            // kept: one left pending by a killed run is aborted by its
            // resume.
            b.with_http_connector(counting).build().map(|s| {
                let s = Arc::new(s);
                Stores { object: s.clone(), multipart: Some(s) }
            })
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(base);
            for (k, v) in options {
                if let Ok(key) = k.parse::<GoogleConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            b.with_http_connector(counting).build().map(|s| plain(Arc::new(s)))
        }
        // Azure's uncommitted blocks go when the blob is committed (or
        // after a week): there is nothing to abort.
        "az" | "adl" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(base);
            for (k, v) in options {
                if let Ok(key) = k.parse::<AzureConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            b.with_http_connector(counting).build().map(|s| plain(Arc::new(s)))
        }
        "http" | "https" => {
            let mut client = ClientOptions::new().with_allow_http(scheme == "http");
            for (k, v) in options {
                if let Ok(key) = k.parse::<ClientConfigKey>() {
                    client = client.with_config(key, v);
                }
            }
            let b = HttpBuilder::new().with_url(base).with_client_options(client);
            b.with_http_connector(counting).build().map(|s| plain(Arc::new(s)))
        }
        other => return Err(format!("no client for `{other}://`")),
    };
    built.map_err(|e| e.to_string())
}

/// Makes reqwest clients whose requests are counted.
#[derive(Debug)]
struct Counting(Arc<Requests>);

impl HttpConnector for Counting {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counted { inner, requests: self.0.clone() }))
    }
}

/// A client that counts each request and each throttled or failed one.
#[derive(Debug)]
struct Counted {
    inner: HttpClient,
    requests: Arc<Requests>,
}

#[async_trait::async_trait]
impl HttpService for Counted {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.request(req.method().as_str(), req.uri().query().unwrap_or(""));
        let answer = self.inner.execute(req).await;
        let counter = match &answer {
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => &self.requests.retried,
            Ok(_) => return answer,
            Err(_) => &self.requests.failed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        answer
    }
}
