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
    let plain = |store: Arc<dyn ObjectStore>| Stores { object: store, multipart: None, pending: None };
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
            // resume, and one whose id was never noted is found by listing.
            let listing = S3Pending::config(&b, base);
            b.with_http_connector(counting.clone()).build().and_then(|s| {
                let s = Arc::new(s);
                let pending = S3Pending::new(s.clone(), listing, &counting)?;
                Ok(Stores { object: s.clone(), multipart: Some(s), pending: Some(Arc::new(pending)) })
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

/// Where an S3 bucket's requests go, and how they are signed: what
/// object_store's builder works out, worked out the same way.
struct S3Listing {
    bucket_url: String,
    region: String,
    client: ClientOptions,
    sign_payload: bool,
}

/// S3's ListMultipartUploads, signed with the bucket's own credentials.
struct S3Pending {
    s3: Arc<object_store::aws::AmazonS3>,
    listing: S3Listing,
    http: HttpClient,
}

impl S3Pending {
    /// The bucket URL, region and client options of `b`, the builder of
    /// the bucket `base` (`s3://BUCKET`), as its `build` resolves them.
    fn config(b: &AmazonS3Builder, base: &str) -> S3Listing {
        let get = |k: AmazonS3ConfigKey| b.get_config_value(&k);
        let bucket = base.split_once("://").map_or(base, |(_, b)| b).trim_end_matches('/');
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let bucket_url = match (get(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
            (Some(endpoint), true) => endpoint,
            (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let mut client = ClientOptions::new();
        for key in [
            ClientConfigKey::AllowHttp,
            ClientConfigKey::AllowInvalidCertificates,
            ClientConfigKey::ConnectTimeout,
            ClientConfigKey::Timeout,
            ClientConfigKey::ProxyUrl,
            ClientConfigKey::ProxyCaCertificate,
            ClientConfigKey::ProxyExcludes,
        ] {
            if let Some(v) = get(AmazonS3ConfigKey::Client(key)) {
                client = client.with_config(key, v);
            }
        }
        let sign_payload = get(AmazonS3ConfigKey::UnsignedPayload).is_none_or(|v| v != "true");
        S3Listing { bucket_url, region, client, sign_payload }
    }

    fn new(
        s3: Arc<object_store::aws::AmazonS3>,
        listing: S3Listing,
        connector: &Counting,
    ) -> object_store::Result<S3Pending> {
        let http = connector.connect(&listing.client)?;
        Ok(S3Pending { s3, listing, http })
    }

    /// One page of the uploads under `key`, from the markers given.
    async fn page(&self, key: &str, markers: Option<(&str, &str)>) -> Result<ListUploads, String> {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY).to_string();
        let mut url = format!("{}?uploads&prefix={}", self.listing.bucket_url, enc(key));
        if let Some((key_marker, id_marker)) = markers {
            url.push_str(&format!("&key-marker={}&upload-id-marker={}", enc(key_marker), enc(id_marker)));
        }
        let credential = self.s3.credentials().get_credential().await.map_err(|e| e.to_string())?;
        let mut request =
            http::Request::get(&url).body(object_store::client::HttpRequestBody::empty()).map_err(|e| e.to_string())?;
        object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.listing.region)
            .with_sign_payload(self.listing.sign_payload)
            .try_authorize(&mut request, None)
            .map_err(|e| e.to_string())?;
        let answer = self.http.execute(request).await.map_err(|e| format!("ListMultipartUploads: {e}"))?;
        let status = answer.status();
        let body = answer.into_body().bytes().await.map_err(|e| format!("ListMultipartUploads: {e}"))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!("ListMultipartUploads answered {status}: {}", super::s3_message(&text)));
        }
        quick_xml::de::from_str(&text).map_err(|e| format!("ListMultipartUploads: an answer that does not parse: {e}"))
    }
}

impl super::PendingUploads for S3Pending {
    fn list<'a>(&'a self, key: &'a str) -> futures_util::future::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let mut markers: Option<(String, String)> = None;
            loop {
                let page = self.page(key, markers.as_ref().map(|(k, i)| (k.as_str(), i.as_str()))).await?;
                found.extend(page.upload.into_iter().filter(|u| u.key == key).map(|u| u.upload_id));
                match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
                    (true, Some(k), Some(i)) => markers = Some((k, i)),
                    _ => return Ok(found),
                }
            }
        })
    }
}

/// What a query string's values escape: all but RFC 3986's unreserved
/// characters, as SigV4's canonical query asks.
const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A ListMultipartUploads answer: the parts fanout reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploads {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(default)]
    upload: Vec<Upload>,
}

/// One pending upload of a ListMultipartUploads answer.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
}

/// Makes reqwest clients whose requests are counted.
#[derive(Debug, Clone)]
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
