//! A small Azure Table REST client for tests: point reads and writes of one string property, signed
//! with Shared Key Lite under the development account's key, sent to a node of the caller's choosing
//! (the fault campaign sends each request to a random node, as a load balancer would).
//!
//! Outcomes are classified the way a careful client must: a refusal Azure documents as final (4xx,
//! 503 ServerBusy — nothing was applied) is a failure; a timeout, a lost connection or another 5xx
//! (500 OperationTimedOut above all) leaves the write's outcome unknown.

use std::time::Duration;

use base64::Engine as _;
use trestle_types::ETag;

/// The development account every test cluster serves.
pub const ACCOUNT: &str = "devstoreaccount1";

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestError {
    /// A definite refusal: the request did not take effect.
    Refused { status: u16, code: String },
    /// The request may or may not have taken effect.
    Unknown(String),
}

/// An entity's string property `v` and its ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub value: Option<String>,
    pub etag: ETag,
}

#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    key: Vec<u8>,
}

impl RestClient {
    /// A client signing as the development account; every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> anyhow::Result<RestClient> {
        let key =
            base64::engine::general_purpose::STANDARD.decode(trestle_client::DEV_ACCOUNT_KEY)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(RestClient { http, key })
    }

    fn request(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let date = trestle_proto::auth::http_date(chrono::Utc::now());
        // Shared Key Lite for the Table service: date and canonical resource.
        let resource = format!("/{ACCOUNT}/{ACCOUNT}/{path}");
        let signature = trestle_types::signing::sign(&self.key, &format!("{date}\n{resource}"));
        self.http
            .request(method, format!("{endpoint}/{ACCOUNT}/{path}"))
            .header("x-ms-date", date)
            .header("x-ms-version", "2019-02-02")
            .header("Accept", "application/json;odata=nometadata")
            .header(
                "Authorization",
                format!("SharedKeyLite {ACCOUNT}:{signature}"),
            )
    }

    /// Reads entity (`pk`, `rk`) of `table` through `endpoint`; `None` if it does not exist.
    pub async fn get(
        &self,
        endpoint: &str,
        table: &str,
        pk: &str,
        rk: &str,
    ) -> Result<Option<Register>, RestError> {
        let path = format!("{table}(PartitionKey='{pk}',RowKey='{rk}')");
        let response = self
            .request(reqwest::Method::GET, endpoint, &path)
            .send()
            .await
            .map_err(|e| RestError::Unknown(e.to_string()))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let (etag, body) = read(response).await?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RestError::Unknown(e.to_string()))?;
        Ok(Some(Register {
            value: json["v"].as_str().map(str::to_string),
            etag: etag.ok_or_else(|| RestError::Unknown("no ETag".into()))?,
        }))
    }

    /// Insert-or-replace (`if_match: None`) or replace if the ETag matches.
    pub async fn put(
        &self,
        endpoint: &str,
        table: &str,
        pk: &str,
        rk: &str,
        value: &str,
        if_match: Option<ETag>,
    ) -> Result<ETag, RestError> {
        let path = format!("{table}(PartitionKey='{pk}',RowKey='{rk}')");
        let body = serde_json::json!({ "PartitionKey": pk, "RowKey": rk, "v": value }).to_string();
        let mut request = self
            .request(reqwest::Method::PUT, endpoint, &path)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag.to_header());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                // Nothing was sent.
                RestError::Refused {
                    status: 0,
                    code: e.to_string(),
                }
            } else {
                RestError::Unknown(e.to_string())
            }
        })?;
        let (etag, _) = read(response).await?;
        etag.ok_or_else(|| RestError::Unknown("no ETag".into()))
    }
}

/// The ETag and body of a successful response, or the classified error.
async fn read(response: reqwest::Response) -> Result<(Option<ETag>, Vec<u8>), RestError> {
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("ETag")
        .and_then(|v| v.to_str().ok())
        .and_then(ETag::parse);
    let code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response
        .bytes()
        .await
        .map_err(|e| RestError::Unknown(e.to_string()))?;
    match status {
        200..=299 => Ok((etag, body.to_vec())),
        400..=499 | 503 => Err(RestError::Refused { status, code }),
        _ => Err(RestError::Unknown(format!("{status} {code}"))),
    }
}
