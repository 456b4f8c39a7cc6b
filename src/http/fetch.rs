//! The edge rim's platform seams: outbound HTTP over the worker's `fetch`, timers on
//! JavaScript timeouts, and the clock from `Date.now()`.

use super::{HttpClient, HttpError, ReqBody};
use crate::model::platform::{box_stream, ByteStream, Clock, Sleeper};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::time::Duration;

/// Outbound HTTP through the Workers runtime. Redirects are never followed: storage
/// and the backend answer redirects meant for the client.
#[derive(Debug, Clone)]
pub struct FetchClient {
    timeout: Duration,
}

impl FetchClient {
    /// A client that gives up on an exchange after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        FetchClient { timeout }
    }

    /// Send one request (headers, method and a whole body) and return the runtime's response.
    pub async fn exchange(
        &self,
        parts: http::request::Parts,
        body: Option<Bytes>,
    ) -> Result<worker::Response, HttpError> {
        let err = |e: worker::Error| HttpError::Transport(e.to_string());
        let headers = worker::Headers::new();
        for (k, v) in &parts.headers {
            if let Ok(v) = v.to_str() {
                headers.append(k.as_str(), v).map_err(err)?;
            }
        }
        let mut init = worker::RequestInit::new();
        init.with_method(worker::Method::from(parts.method.as_str().to_string()))
            .with_headers(headers)
            .with_redirect(worker::RequestRedirect::Manual);
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            init.with_body(Some(js_sys::Uint8Array::from(&b[..]).into()));
        }
        let req = worker::Request::new_with_init(&parts.uri.to_string(), &init).map_err(err)?;
        let fetch = worker::Fetch::Request(req);
        let send = std::pin::pin!(fetch.send());
        let timer = std::pin::pin!(worker::Delay::from(self.timeout));
        match futures::future::select(send, timer).await {
            futures::future::Either::Left((r, _)) => r.map_err(err),
            futures::future::Either::Right(_) => Err(HttpError::Transport(format!(
                "no answer from {} within {:?}",
                parts.uri.host().unwrap_or(""),
                self.timeout
            ))),
        }
    }
}

fn head(resp: &worker::Response) -> http::response::Builder {
    let mut b = http::Response::builder().status(resp.status_code());
    for (k, v) in resp.headers().entries() {
        b = b.header(k, v);
    }
    b
}

impl HttpClient for FetchClient {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let mut resp = self.exchange(parts, Some(body)).await?;
        let builder = head(&resp);
        let bytes = resp.bytes().await.map_err(|e| HttpError::Transport(e.to_string()))?;
        builder
            .body(Bytes::from(bytes))
            .map_err(|e| HttpError::Transport(e.to_string()))
    }

    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        let (parts, body) = req.into_parts();
        let body = match body {
            ReqBody::Bytes(b) => b,
            // The edge only reads; uploads run on the backend.
            ReqBody::Stream { .. } => {
                return Err(HttpError::Transport("streamed uploads are not made at the edge".into()))
            }
        };
        let mut resp = self.exchange(parts, Some(body)).await?;
        let builder = head(&resp);
        let stream = match resp.stream() {
            Ok(s) => box_stream(s.map(|r| r.map(Bytes::from).map_err(|e| std::io::Error::other(e.to_string())))),
            // No body to stream (the answer to a HEAD, a 204): what there is, whole.
            Err(_) => {
                let bytes = resp.bytes().await.map_err(|e| HttpError::Transport(e.to_string()))?;
                box_stream(futures::stream::iter([Ok(Bytes::from(bytes))]))
            }
        };
        builder.body(stream).map_err(|e| HttpError::Transport(e.to_string()))
    }
}

/// Timers on JavaScript timeouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerSleeper;

impl Sleeper for WorkerSleeper {
    async fn sleep(&self, d: Duration) {
        worker::Delay::from(d).await
    }
}

/// The clock of the Workers runtime (`Date.now()`; `SystemTime::now` panics on wasm32).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsClock;

impl Clock for JsClock {
    fn now(&self) -> DateTime<Utc> {
        let ms = js_sys::Date::now();
        DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
    }
}
