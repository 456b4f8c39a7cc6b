//! One client connection's limits: request bodies read against a deadline, an idle
//! timeout and a shared memory budget reserved as bytes arrive; and the errors hyper
//! answers by itself (before any request exists) reshaped into the DSS error JSON.

use crate::api::cors::{self, CorsOrigins};
use crate::api::error::RenderError;
use crate::api::{ApiError, REQUEST_ID_HEADER};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How request bodies are read.
#[derive(Clone)]
pub struct BodyLimits {
    /// Longest pause between two pieces of a body.
    pub idle: Duration,
    /// Longest time to receive a whole body.
    pub total: Duration,
    /// Memory for bodies across all connections, in KiB permits.
    pub budget: Arc<Semaphore>,
}

/// A request body in memory, with the share of the body budget it holds (released when
/// dropped, after the request has been answered).
pub struct ReadBody {
    /// The bytes.
    pub bytes: Bytes,
    /// Its reservation.
    pub _held: Option<OwnedSemaphorePermit>,
}

/// Read a body of at most `limit` bytes. Memory is reserved as bytes arrive, never for a
/// declared length, so clients that announce large bodies and then stall hold nothing;
/// a pause longer than the idle timeout, or a body slower than the total deadline, ends
/// in 408 (and the connection is closed); a budget that stays exhausted ends in 503.
pub async fn read_body<B>(mut body: B, limit: usize, limits: &BodyLimits) -> Result<ReadBody, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let deadline = Instant::now() + limits.total;
    let mut out: Vec<u8> = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_kib: u32 = 0;
    loop {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(ApiError::RequestTimeout(format!(
                "the request body was not received within {} s",
                limits.total.as_secs()
            )));
        }
        let wait = limits.idle.min(left);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                return Err(ApiError::RequestTimeout(format!(
                    "the request body stalled for {} s",
                    wait.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!("request body broke off: {e}");
                return Err(ApiError::IllegalArguments("could not read the request body".into()));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else { continue };
        if out.len() + data.len() > limit {
            discard(body, (out.len() + data.len()) as u64, limits).await;
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let need = u32::try_from((out.len() + data.len()).div_ceil(1024)).unwrap_or(u32::MAX);
        if need > held_kib {
            let reserve = limits.budget.clone().acquire_many_owned(need - held_kib);
            let wait = limits.idle.min(deadline.saturating_duration_since(Instant::now()));
            let permit = match tokio::time::timeout(wait, reserve).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(ApiError::Unavailable(
                        "the server is receiving too many request bodies at once; try again shortly".into(),
                    ))
                }
            };
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            held_kib = need;
        }
        if out.is_empty() && body.is_end_stream() {
            // The common case of a body in one piece: no copy.
            return Ok(ReadBody {
                bytes: data,
                _held: held,
            });
        }
        out.extend_from_slice(&data);
    }
    Ok(ReadBody {
        bytes: Bytes::from(out),
        _held: held,
    })
}

/// Most bytes of a refused body read (and dropped) before answering, so that the client
/// gets its 413 instead of a connection reset (closing a socket with unread input makes
/// the kernel reset it, and the answer can be lost).
pub const DRAIN_MAX: u64 = 64 * 1024 * 1024;

/// Read and drop the rest of a refused body, `seen` bytes of which have arrived, up to
/// [`DRAIN_MAX`] in all and within the body deadlines; nothing is kept.
pub async fn discard<B>(mut body: B, mut seen: u64, limits: &BodyLimits)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let deadline = Instant::now() + limits.total;
    while seen <= DRAIN_MAX {
        let wait = limits.idle.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    seen += d.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// Bytes of the latest input kept to find an `Origin` header when hyper refuses a request
/// before it is parsed.
const RECENT_INPUT: usize = 16 * 1024;

/// A client connection whose bodiless automatic error answers from hyper (400 for a
/// malformed request, 414 for a URI over 64 KiB, 431 for oversized headers) are replaced,
/// on their way out, by the DSS error JSON with CORS and a request id: every error a
/// client can get has the same shape.
pub struct ShapedIo<T> {
    inner: T,
    cors: Arc<CorsOrigins>,
    recent: Vec<u8>,
    owed: Vec<u8>,
    owed_at: usize,
}

impl<T> ShapedIo<T> {
    /// Wrap a connection.
    pub fn new(inner: T, cors: Arc<CorsOrigins>) -> Self {
        ShapedIo {
            inner,
            cors,
            recent: Vec::new(),
            owed: Vec::new(),
            owed_at: 0,
        }
    }
}

/// The status of a head hyper wrote on its own for a request it could not parse: one of
/// its automatic statuses, and no `Content-Type` (every answer of ours has one).
fn automatic_error(buf: &[u8]) -> Option<ApiError> {
    let err = match buf.get(..13)? {
        b"HTTP/1.1 400 " => ApiError::MalformedRequest,
        b"HTTP/1.1 414 " => ApiError::UriTooLong,
        b"HTTP/1.1 431 " => ApiError::HeadersTooLarge,
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    (!head.contains("\r\ncontent-type:")).then_some(err)
}

/// The value of the last `Origin` header line in `input`, if any.
fn origin_in(input: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(input);
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("origin"))
        .map(|(_, v)| v.trim().to_string())
        .last()
}

fn shaped(err: ApiError, origin: Option<String>, origins: &CorsOrigins) -> Vec<u8> {
    let status = err.status();
    let body = err.body();
    let mut req_headers = http::HeaderMap::new();
    if let Some(o) = origin.and_then(|o| http::HeaderValue::from_str(&o).ok()) {
        req_headers.insert(http::header::ORIGIN, o);
    }
    let mut h = http::HeaderMap::new();
    cors::decorate(origins, &req_headers, &mut h);
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::debug!(id = %id, status = status.as_u16(), "refused an unparsable request");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n{REQUEST_ID_HEADER}: {id}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        err.content_type(),
        body.len()
    )
    .into_bytes();
    for (k, v) in &h {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncWrite + Unpin> ShapedIo<T> {
    /// Write out a replacement answer still owed.
    fn poll_owed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.owed_at < self.owed.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.owed[self.owed_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.owed_at += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `head` is one of hyper's automatic error answers, owe ours instead.
    fn replace(&mut self, head: &[u8]) -> bool {
        let Some(err) = automatic_error(head) else {
            return false;
        };
        self.owed = shaped(err, origin_in(&self.recent), &self.cors);
        self.owed_at = 0;
        true
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ShapedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        let this = &mut *self;
        this.recent.extend_from_slice(new);
        if this.recent.len() > RECENT_INPUT {
            let cut = this.recent.len() - RECENT_INPUT;
            this.recent.drain(..cut);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ShapedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_owed(cx))?;
        if self.replace(buf) {
            // hyper wrote its answer, as far as it knows; ours goes out in its place.
            let _ = self.poll_owed(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        // Every answer of ours starts a new request's input.
        self.recent.clear();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_owed(cx))?;
        if let Some(first) = bufs.first() {
            if self.replace(first) {
                let _ = self.poll_owed(cx)?;
                return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
            }
        }
        self.recent.clear();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_owed(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_owed(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hyper_answers_but_never_ours() {
        let hyper414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(matches!(automatic_error(hyper414), Some(ApiError::UriTooLong)));
        let hyper431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(automatic_error(hyper431), Some(ApiError::HeadersTooLarge)));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n";
        assert!(automatic_error(ours).is_none());
        assert!(automatic_error(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(
            automatic_error(b"HTTP/1.1 400 Bad").is_none(),
            "an incomplete head is not judged"
        );
    }

    #[test]
    fn origin_from_raw_input() {
        let raw = b"GET /aaaa HTTP/1.1\r\nHost: x\r\norigin: https://portal.example\r\n\r\n";
        assert_eq!(origin_in(raw).as_deref(), Some("https://portal.example"));
        assert_eq!(origin_in(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn shaped_answers_are_dss_errors_with_cors() {
        let out = shaped(
            ApiError::UriTooLong,
            Some("https://portal.example".into()),
            &CorsOrigins::Any,
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains("access-control-allow-origin: *"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "uri_too_long");
        assert_eq!(v["status"], 414);
    }
}
