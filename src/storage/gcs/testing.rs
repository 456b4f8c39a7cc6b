//! Test doubles shared by the GCS unit tests: a clock moved by hand, a sleeper that only
//! records, and a fake HTTP server that records every request and answers it from a
//! handler, optionally after yielding to the executor a few times.

use super::*;
use crate::http::HttpError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

pub(super) struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    pub(super) fn at(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }

    pub(super) fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

/// Sleeps return at once; their lengths are recorded.
#[derive(Clone, Default)]
pub(super) struct RecSleeper(pub(super) Arc<Mutex<Vec<Duration>>>);

impl Sleeper for RecSleeper {
    async fn sleep(&self, d: Duration) {
        self.0.lock().unwrap().push(d);
    }
}

pub(super) struct Seen {
    pub(super) method: Method,
    pub(super) url: String,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
}

impl Seen {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(super) type Reply = Result<http::Response<Bytes>, HttpError>;
type Handler = Box<dyn Fn(&Seen) -> Reply + Send + Sync>;
type Delay = Box<dyn Fn(&Seen) -> u32 + Send + Sync>;

/// An HTTP client that records requests and answers them with `handler`.
pub(super) struct Fake {
    pub(super) seen: Mutex<Vec<Seen>>,
    handler: Handler,
    /// How many times a request yields to the executor before it is answered, so that
    /// concurrent callers interleave as they would over a network.
    delay: Option<Delay>,
    pub(super) limits: Mutex<Vec<usize>>,
}

/// Pending once (waking itself at once), then ready.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Fake {
    pub(super) fn new(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Fake {
            seen: Mutex::new(Vec::new()),
            handler: Box::new(handler),
            delay: None,
            limits: Mutex::new(Vec::new()),
        }
    }

    /// Answer each request only after yielding `delay(request)` times.
    pub(super) fn delayed(mut self, delay: impl Fn(&Seen) -> u32 + Send + Sync + 'static) -> Self {
        self.delay = Some(Box::new(delay));
        self
    }

    async fn handle(&self, parts: http::request::Parts, body: Bytes) -> Reply {
        let seen = Seen {
            method: parts.method,
            url: parts.uri.to_string(),
            headers: parts.headers,
            body,
        };
        for _ in 0..self.delay.as_ref().map_or(0, |d| d(&seen)) {
            YieldNow(false).await;
        }
        let reply = (self.handler)(&seen);
        self.seen.lock().unwrap().push(seen);
        reply
    }

    pub(super) fn count(&self, pred: impl Fn(&Seen) -> bool) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| pred(s)).count()
    }
}

impl HttpClient for &Fake {
    async fn send(&self, req: http::Request<Bytes>) -> Reply {
        let (parts, body) = req.into_parts();
        self.handle(parts, body).await
    }

    /// As a real client: an answer over `limit` is refused (and the limit recorded).
    async fn send_limited(&self, req: http::Request<Bytes>, limit: usize) -> Reply {
        self.limits.lock().unwrap().push(limit);
        let (parts, body) = req.into_parts();
        let resp = self.handle(parts, body).await?;
        if resp.body().len() > limit {
            return Err(HttpError::TooLarge(limit));
        }
        Ok(resp)
    }

    async fn send_stream(&self, req: http::Request<ReqBody>) -> Result<http::Response<ByteStream>, HttpError> {
        let (parts, body) = req.into_parts();
        let body = match body {
            ReqBody::Bytes(b) => b,
            ReqBody::Stream { .. } => return Err(HttpError::Transport("streamed bodies unused".into())),
        };
        let resp = self.handle(parts, body).await?;
        let (parts, body) = resp.into_parts();
        // Hand the body out in small pieces, as a network would.
        let pieces: Vec<std::io::Result<Bytes>> = body.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Ok(http::Response::from_parts(
            parts,
            box_stream(futures::stream::iter(pieces)),
        ))
    }
}

pub(super) fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    Ok(http::Response::builder().status(status).body(body.into()).unwrap())
}

pub(super) fn object_json(size: usize) -> String {
    serde_json::json!({
        "name": "files/a",
        "size": size.to_string(),
        "contentType": "application/json",
        "metadata": {"hca-dss-sha256": "abc"},
        "updated": "2024-01-02T03:04:05.678Z",
        "generation": "1700000000000001",
    })
    .to_string()
}

pub(super) fn rsa_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap()
}

pub(super) fn t0() -> DateTime<Utc> {
    "2024-05-06T07:08:09Z".parse().unwrap()
}

pub(super) const TOKEN_URI: &str = "https://oauth2.example/token";

/// A store for bucket `bkt` at `https://gcs.example`, over `fake`.
pub(super) fn store(
    fake: &Fake,
    credentials: Option<ServiceAccountKey>,
    clock: Arc<ManualClock>,
) -> (GcsStore<&Fake, RecSleeper>, RecSleeper) {
    let sleeper = RecSleeper::default();
    let cfg = GcsConfig {
        bucket: "bkt".into(),
        endpoint: "https://gcs.example/".into(),
        credentials,
        hmac: None,
    };
    (GcsStore::new(cfg, fake, sleeper.clone(), clock), sleeper)
}
