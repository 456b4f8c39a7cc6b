//! Outbound HTTP: the one trait storage and auth use to reach the network.
//! Native implementation over reqwest; the edge supplies a Fetch-based one.

use bytes::Bytes;

/// Outbound HTTP failures.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Could not connect, timed out, or the exchange broke.
    #[error("HTTP transport error: {0}")]
    Transport(String),
}

/// Sends one request and returns the whole response.
pub trait HttpClient: crate::model::MaybeSend + crate::model::MaybeSync {
    /// Perform `req`.
    fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> impl std::future::Future<Output = Result<http::Response<Bytes>, HttpError>> + crate::model::MaybeSend;
}

/// reqwest-backed client with a request timeout.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone)]
pub struct ReqwestClient {
    inner: reqwest::Client,
}

#[cfg(not(target_arch = "wasm32"))]
impl ReqwestClient {
    /// A client with `timeout` per request.
    pub fn new(timeout: std::time::Duration) -> Result<Self, HttpError> {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        Ok(ReqwestClient { inner })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl HttpClient for ReqwestClient {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let resp = self
            .inner
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let mut builder = http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            builder = builder.header(k, v);
        }
        let body = resp.bytes().await.map_err(|e| HttpError::Transport(e.to_string()))?;
        builder.body(body).map_err(|e| HttpError::Transport(e.to_string()))
    }
}
