//! Cross-origin requests (CORS), so that a web page can list, search and download
//! directly. Off unless origins are configured (`DSS_CORS_ORIGINS`).

use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// Response headers a page may read: the checksums and metadata of `HEAD`/`GET`
/// `/files`, paging links and the redirect target.
pub const EXPOSED_HEADERS: &str = "X-DSS-CREATOR-UID, X-DSS-VERSION, X-DSS-CONTENT-TYPE, X-DSS-SIZE, \
X-DSS-CRC32C, X-DSS-S3-ETAG, X-DSS-SHA1, X-DSS-SHA256, Link, Location, Retry-After, Content-Disposition, \
Content-Length, Content-Range, X-Request-Id";
const ALLOWED_METHODS: &str = "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Range, X-Requested-With";

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// CORS is off: no CORS headers are sent.
    #[default]
    Off,
    /// Any origin (`*`).
    Any,
    /// These origins exactly (scheme, host and port, as browsers send them).
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parse a comma-separated list; `*` allows any origin, empty turns CORS off.
    pub fn parse(s: &str) -> Self {
        let items: Vec<String> = s
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if items.iter().any(|o| o == "*") {
            CorsOrigins::Any
        } else if items.is_empty() {
            CorsOrigins::Off
        } else {
            CorsOrigins::List(items)
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: Option<&str>) -> Option<HeaderValue> {
        match (self, origin) {
            (CorsOrigins::Off, _) | (_, None) => None,
            (CorsOrigins::Any, Some(_)) => Some(HeaderValue::from_static("*")),
            (CorsOrigins::List(l), Some(o)) => l
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
                .then(|| HeaderValue::from_str(o).ok())
                .flatten(),
        }
    }
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`), or `None`
/// when the request is not one or CORS is off. A disallowed origin gets 403.
pub fn preflight(origins: &CorsOrigins, method: &Method, headers: &HeaderMap) -> Option<http::Response<()>> {
    if *method != Method::OPTIONS
        || *origins == CorsOrigins::Off
        || !headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let mut r = http::Response::new(());
    match origins.allow(origin(headers)) {
        Some(allow) => {
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            h.insert(http::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
            h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
        }
        None => *r.status_mut() = StatusCode::FORBIDDEN,
    }
    Some(r)
}

/// Add the CORS headers of an actual (non-preflight) response to a request with `req_headers`.
pub fn decorate(origins: &CorsOrigins, req_headers: &HeaderMap, resp_headers: &mut HeaderMap) {
    if let Some(allow) = origins.allow(origin(req_headers)) {
        resp_headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        resp_headers.insert(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        resp_headers.append(http::header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(origin: &str, preflight: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        if preflight {
            h.insert(
                http::header::ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static("GET"),
            );
        }
        h
    }

    #[test]
    fn preflight_allows_listed_origins_only() {
        let o = CorsOrigins::parse("https://portal.example.org, https://b.example.org/");
        let ok = preflight(&o, &Method::OPTIONS, &req("https://b.example.org", true)).unwrap();
        assert_eq!(ok.status(), 204);
        assert_eq!(ok.headers()["access-control-allow-origin"], "https://b.example.org");
        assert!(ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization"));
        let no = preflight(&o, &Method::OPTIONS, &req("https://evil.example.org", true)).unwrap();
        assert_eq!(no.status(), 403);
        assert!(no.headers().get("access-control-allow-origin").is_none());
        // Not a preflight, or CORS off: the router answers.
        assert!(preflight(&o, &Method::OPTIONS, &req("https://b.example.org", false)).is_none());
        assert!(preflight(&CorsOrigins::Off, &Method::OPTIONS, &req("https://b.example.org", true)).is_none());
    }

    #[test]
    fn responses_expose_dss_headers() {
        let mut h = HeaderMap::new();
        decorate(&CorsOrigins::parse("*"), &req("https://x.example", false), &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        let exposed = h["access-control-expose-headers"].to_str().unwrap();
        for name in ["X-DSS-SHA256", "X-DSS-VERSION", "Link", "Location"] {
            assert!(exposed.contains(name), "{name}");
        }
        let mut h = HeaderMap::new();
        decorate(
            &CorsOrigins::parse("https://a.example"),
            &req("https://x.example", false),
            &mut h,
        );
        assert!(h.is_empty());
        decorate(&CorsOrigins::Off, &req("https://a.example", false), &mut h);
        assert!(h.is_empty());
    }
}
