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
