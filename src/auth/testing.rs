//! Test doubles for the auth tests: a clock moved by hand and a key server that records
//! every URL it is asked for.

use crate::http::{HttpClient, HttpError, ReqBody};
use crate::model::platform::ByteStream;
use crate::model::Clock;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A clock that moves only when told to.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock at the real current time.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(Utc::now())))
    }

    /// Move the clock `secs` seconds on.
    pub fn advance(&self, secs: i64) {
        *self.0.lock().unwrap() += chrono::Duration::seconds(secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Answers GETs from a table of URL to (status, body), 404 for the rest, and records
/// every URL asked for.
#[derive(Default)]
pub struct FakeKeyServer {
    answers: Mutex<HashMap<String, (u16, Bytes)>>,
    urls: Mutex<Vec<String>>,
}

impl FakeKeyServer {
    /// Answer `url` with `status` and `body` from now on.
    pub fn answer(&self, url: &str, status: u16, body: impl Into<Bytes>) {
        self.answers
            .lock()
            .unwrap()
            .insert(url.to_string(), (status, body.into()));
    }

    /// The URLs asked for so far.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap().clone()
    }

    /// How many requests were made.
    pub fn calls(&self) -> usize {
        self.urls.lock().unwrap().len()
    }

    fn respond(&self, uri: &http::Uri) -> (u16, Bytes) {
        let url = uri.to_string();
        self.urls.lock().unwrap().push(url.clone());
        self.answers
            .lock()
            .unwrap()
            .get(&url)
            .cloned()
            .unwrap_or((404, Bytes::new()))
    }
}

impl HttpClient for &FakeKeyServer {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (status, body) = self.respond(req.uri());
        Ok(http::Response::builder().status(status).body(body).unwrap())
    }

    // Streamed like a real upstream, without a Content-Length, so that a body cap must
    // count the bytes.
    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        let (status, body) = self.respond(req.uri());
        let chunks: Vec<std::io::Result<Bytes>> = body.chunks(4096).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let stream = crate::model::platform::box_stream(futures::stream::iter(chunks));
        Ok(http::Response::builder().status(status).body(stream).unwrap())
    }
}
