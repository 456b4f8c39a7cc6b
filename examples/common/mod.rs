//! What the benchmarks in `examples/` share: percentiles and the lines they print.
//! (A directory without `main.rs`, so Cargo does not take it for an example.)

#![allow(dead_code)] // each benchmark uses a part

/// The `p` quantile (0–1) of `xs`, nearest rank; NaN when empty.
pub fn pct(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The mean of `xs` (0 when empty).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// `n` with thousands separated by commas.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// One report line of latencies in milliseconds: p50, p99, mean, max and count.
pub fn latency_line(label: &str, xs: &[f64]) -> String {
    format!(
        "{label:<40} p50 {:>8.2} ms   p99 {:>8.2} ms   mean {:>8.2} ms   max {:>8.2} ms   (n={})",
        pct(xs, 0.5),
        pct(xs, 0.99),
        mean(xs),
        pct(xs, 1.0),
        xs.len()
    )
}

/// Logging for a benchmark: `RUST_LOG`, errors only by default, on stderr (the report
/// goes to stdout).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Positional argument `i` (1 = the first) as a number, `default` when absent.
pub fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| {
            a.parse::<usize>()
                .unwrap_or_else(|_| panic!("argument {i}: not a number: {a}"))
        })
        .unwrap_or(default)
}

/// A response as the client reads it.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// Send a request through the app's router (host `dss.test`, as `tests/common` does),
/// with a bearer `token` and a JSON `body` when given; the whole response.
pub async fn call(app: &dss::server::NativeApp, method: &str, uri: &str, token: Option<&str>, body: String) -> Resp {
    use futures::StreamExt;
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "dss.test");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    let resp = app.handle(b.body(bytes::Bytes::from(body)).expect("request")).await;
    let (parts, body) = resp.into_parts();
    let body = match body {
        dss::api::Body::Full(b) => b,
        dss::api::Body::Stream(mut s) => {
            let mut v = Vec::new();
            while let Some(c) = s.next().await {
                v.extend_from_slice(&c.expect("response body"));
            }
            bytes::Bytes::from(v)
        }
    };
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}
