//! Platform seams shared by both targets: `Send` bounds that vanish on wasm32,
//! and the clock (wasm32 has no `SystemTime::now`).

use chrono::{DateTime, Utc};

/// `Send` on native targets, nothing on wasm32 (worker futures are `!Send`).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` on native targets, nothing on wasm32 (worker futures are `!Send`).
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` on native targets, nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

/// A boxed byte stream: `Send` natively, local on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;
/// A boxed byte stream: `Send` natively, local on wasm32.
#[cfg(target_arch = "wasm32")]
pub type ByteStream = futures::stream::LocalBoxStream<'static, std::io::Result<bytes::Bytes>>;

/// A boxed future: `Send` natively, local on wasm32 (for the few `dyn` seams).
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;
/// A boxed future: `Send` natively, local on wasm32 (for the few `dyn` seams).
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = futures::future::LocalBoxFuture<'a, T>;

/// Where the current time comes from.
pub trait Clock: MaybeSend + MaybeSync {
    /// The current UTC time.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock (native only: it panics on wasm32).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Box a byte stream as [`ByteStream`] on either target.
#[cfg(not(target_arch = "wasm32"))]
pub fn box_stream<S>(s: S) -> ByteStream
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    Box::pin(s)
}

/// Box a byte stream as [`ByteStream`] on either target.
#[cfg(target_arch = "wasm32")]
pub fn box_stream<S>(s: S) -> ByteStream
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + 'static,
{
    Box::pin(s)
}

/// Timers: sleeping differs per target (tokio natively, JS timers at the edge).
pub trait Sleeper: MaybeSend + MaybeSync {
    /// Wait `d`.
    fn sleep(&self, d: std::time::Duration) -> impl std::future::Future<Output = ()> + MaybeSend;
}

/// For tests of concurrent code on any executor: pending once (waking itself), then ready,
/// so that the other futures of a `join_all` run in between.
#[cfg(test)]
pub(crate) struct YieldOnce(pub(crate) bool);

#[cfg(test)]
impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
