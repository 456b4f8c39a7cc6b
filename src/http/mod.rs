//! Outbound HTTP: the one trait storage and auth use to reach the network.
//! Native implementation over reqwest; the edge supplies a Fetch-based one.

use crate::model::platform::ByteStream;
use bytes::Bytes;

/// Outbound HTTP failures.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Could not connect, timed out, or the exchange broke.
    #[error("HTTP transport error: {0}")]
    Transport(String),
    /// The answer's body is larger than the caller accepts (see [`HttpClient::send_limited`]).
    #[error("HTTP answer larger than {0} bytes")]
    TooLarge(usize),
}

/// A request body: in memory, or streamed with a known length.
pub enum ReqBody {
    /// Whole body.
    Bytes(Bytes),
    /// Streamed body of exactly `len` bytes.
    Stream {
        /// The bytes.
        stream: ByteStream,
        /// Their count (sent as `Content-Length`).
        len: u64,
    },
}

/// Sends requests. Responses are either collected whole or streamed.
pub trait HttpClient: crate::model::MaybeSend + crate::model::MaybeSync {
    /// Perform `req` and collect the whole response body.
    fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> impl std::future::Future<Output = Result<http::Response<Bytes>, HttpError>> + crate::model::MaybeSend;

    /// Perform `req` and hand back the response body as a stream (for large objects).
    fn send_stream(
        &self,
        req: http::Request<ReqBody>,
    ) -> impl std::future::Future<Output = Result<http::Response<ByteStream>, HttpError>> + crate::model::MaybeSend;

    /// Perform `req` and collect the response body, refusing (without holding it) a body
    /// of more than `limit` bytes: every answer from an upstream we do not control
    /// (key servers, Elasticsearch, schema hosts, storage documents) is read this way.
    fn send_limited(
        &self,
        req: http::Request<Bytes>,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<http::Response<Bytes>, HttpError>> + crate::model::MaybeSend {
        async move {
            use futures::StreamExt;
            let (parts, body) = req.into_parts();
            let resp = self
                .send_stream(http::Request::from_parts(parts, ReqBody::Bytes(body)))
                .await?;
            let (head, mut stream) = resp.into_parts();
            let declared = head
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit as u64) {
                return Err(HttpError::TooLarge(limit));
            }
            let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| HttpError::Transport(e.to_string()))?;
                if out.len() + chunk.len() > limit {
                    return Err(HttpError::TooLarge(limit));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(http::Response::from_parts(head, Bytes::from(out)))
        }
    }
}

/// reqwest-backed client with a request timeout.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone)]
pub struct ReqwestClient {
    inner: reqwest::Client,
    /// Same pool, no overall timeout: for streamed transfers that may take long.
    streaming: reqwest::Client,
}

#[cfg(not(target_arch = "wasm32"))]
impl ReqwestClient {
    /// A client with `timeout` per whole request (streamed transfers get a connect and
    /// read timeout instead).
    pub fn new(timeout: std::time::Duration) -> Result<Self, HttpError> {
        let build = |b: reqwest::ClientBuilder| {
            b.redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| HttpError::Transport(e.to_string()))
        };
        Ok(ReqwestClient {
            inner: build(reqwest::Client::builder().timeout(timeout))?,
            streaming: build(
                reqwest::Client::builder()
                    .connect_timeout(timeout)
                    .read_timeout(timeout * 6),
            )?,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn response_head(resp: &reqwest::Response) -> http::response::Builder {
    let mut builder = http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        builder = builder.header(k, v);
    }
    builder
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
        let builder = response_head(&resp);
        let body = resp.bytes().await.map_err(|e| HttpError::Transport(e.to_string()))?;
        builder.body(body).map_err(|e| HttpError::Transport(e.to_string()))
    }

    /// As the trait's, on the client with the whole-request timeout, so a slow upstream
    /// cannot hold the call open either.
    async fn send_limited(&self, req: http::Request<Bytes>, limit: usize) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let mut resp = self
            .inner
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(HttpError::TooLarge(limit));
        }
        let builder = response_head(&resp);
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError::Transport(e.to_string()))? {
            if out.len() + chunk.len() > limit {
                return Err(HttpError::TooLarge(limit));
            }
            out.extend_from_slice(&chunk);
        }
        builder
            .body(Bytes::from(out))
            .map_err(|e| HttpError::Transport(e.to_string()))
    }

    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        use futures::StreamExt;
        let (parts, body) = req.into_parts();
        let mut rb = self
            .streaming
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers);
        rb = match body {
            ReqBody::Bytes(b) => rb.body(b),
            ReqBody::Stream { stream, len } => rb
                .header(http::header::CONTENT_LENGTH, len)
                .body(reqwest::Body::wrap_stream(stream)),
        };
        let resp = rb.send().await.map_err(|e| HttpError::Transport(e.to_string()))?;
        let builder = response_head(&resp);
        let stream = resp.bytes_stream().map(|r| r.map_err(std::io::Error::other));
        builder
            .body(crate::model::platform::box_stream(stream))
            .map_err(|e| HttpError::Transport(e.to_string()))
    }
}

/// Timers on tokio (the native [`crate::model::platform::Sleeper`]).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

#[cfg(not(target_arch = "wasm32"))]
impl crate::model::platform::Sleeper for TokioSleeper {
    async fn sleep(&self, d: std::time::Duration) {
        tokio::time::sleep(d).await
    }
}

#[cfg(target_arch = "wasm32")]
pub mod fetch;
pub mod guard;
