//! The route table: which request is which route, who must be signed in for it, and
//! where it runs. The router, and the edge's decision to answer or forward, both read
//! this one table.

use http::Method;

/// A recognised request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /version`.
    Version,
    /// `GET /internal/health`.
    Health,
    /// `GET /v1/swagger.json`.
    Swagger,
    /// `GET /.well-known/openid-configuration` (the dev issuer).
    OpenidConfiguration,
    /// `GET /.well-known/jwks.json` (the dev issuer).
    Jwks,
    /// `GET /blob/…`: signed local downloads.
    Blob,
    /// `GET /v1/files/{uuid}`.
    FileGet(&'a str),
    /// `HEAD /v1/files/{uuid}`.
    FileHead(&'a str),
    /// `PUT /v1/files/{uuid}`.
    FilePut(&'a str),
    /// `GET /v1/bundles/all`.
    BundlesAll,
    /// `GET /v1/bundles/{uuid}`.
    BundleGet(&'a str),
    /// `PUT /v1/bundles/{uuid}`.
    BundlePut(&'a str),
    /// `PATCH /v1/bundles/{uuid}`.
    BundlePatch(&'a str),
    /// `DELETE /v1/bundles/{uuid}`.
    BundleDelete(&'a str),
    /// `POST /v1/search`.
    Search,
    /// A known path with a method it does not take.
    MethodNotAllowed,
    /// Anything else (including API routes this server does not implement yet).
    Unknown,
}

impl<'a> Route<'a> {
    /// Classify `method` and `path` (percent-encoded, as received).
    pub fn classify(method: &Method, path: &'a str) -> Route<'a> {
        let segs: Vec<&'a str> = path.trim_start_matches('/').split('/').collect();
        let m = method.as_str();
        match (m, segs.as_slice()) {
            ("GET" | "HEAD", ["version"]) => Route::Version,
            ("GET" | "HEAD", ["internal", "health"]) => Route::Health,
            ("GET" | "HEAD", ["v1", "swagger.json"]) => Route::Swagger,
            ("GET" | "HEAD", [".well-known", "openid-configuration"]) => Route::OpenidConfiguration,
            ("GET" | "HEAD", [".well-known", "jwks.json"]) => Route::Jwks,
            ("GET" | "HEAD", ["blob", ..]) => Route::Blob,
            ("GET", ["v1", "files", uuid]) => Route::FileGet(uuid),
            ("HEAD", ["v1", "files", uuid]) => Route::FileHead(uuid),
            ("PUT", ["v1", "files", uuid]) => Route::FilePut(uuid),
            ("GET" | "HEAD", ["v1", "bundles", "all"]) => Route::BundlesAll,
            ("GET" | "HEAD", ["v1", "bundles", uuid]) => Route::BundleGet(uuid),
            ("PUT", ["v1", "bundles", uuid]) => Route::BundlePut(uuid),
            ("PATCH", ["v1", "bundles", uuid]) => Route::BundlePatch(uuid),
            ("DELETE", ["v1", "bundles", uuid]) => Route::BundleDelete(uuid),
            ("POST", ["v1", "search"]) => Route::Search,
            (_, ["v1", "files", _]) | (_, ["v1", "bundles", _]) | (_, ["v1", "search"]) => Route::MethodNotAllowed,
            _ => Route::Unknown,
        }
    }

    /// Whether the route is a read the edge answers itself from the replicas (everything
    /// else is forwarded to the backend).
    pub fn runs_at_edge(&self) -> bool {
        matches!(
            self,
            Route::Version
                | Route::Health
                | Route::Swagger
                | Route::FileGet(_)
                | Route::FileHead(_)
                | Route::BundlesAll
                | Route::BundleGet(_)
                | Route::MethodNotAllowed
        )
    }
}

/// Whether the API requires a bearer token for `method` on `path`, as the original's
/// OpenAPI document marks it (including routes implemented only by a newer backend,
/// so that the edge can refuse them without a round trip).
pub fn requires_auth(method: &Method, path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("PUT", ["v1", "files", _]) => true,
        ("PUT" | "PATCH" | "DELETE", ["v1", "bundles", _]) => true,
        (_, ["v1", "subscriptions", ..]) | (_, ["v1", "collections", ..]) => *method != Method::OPTIONS,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_at_edge_and_writes_are_forwarded() {
        let u = "0b0e7c1e-0000-4000-8000-000000000000";
        let f = format!("/v1/files/{u}");
        let b = format!("/v1/bundles/{u}");
        assert_eq!(Route::classify(&Method::GET, &f), Route::FileGet(u));
        assert!(Route::classify(&Method::GET, &f).runs_at_edge());
        assert!(Route::classify(&Method::HEAD, &f).runs_at_edge());
        assert!(Route::classify(&Method::GET, &b).runs_at_edge());
        assert!(Route::classify(&Method::GET, "/v1/bundles/all").runs_at_edge());
        assert!(Route::classify(&Method::GET, "/version").runs_at_edge());
        assert!(!Route::classify(&Method::PUT, &f).runs_at_edge());
        assert!(!Route::classify(&Method::PUT, &b).runs_at_edge());
        assert!(!Route::classify(&Method::POST, "/v1/search").runs_at_edge());
        assert!(!Route::classify(&Method::GET, "/v1/subscriptions").runs_at_edge());
        assert!(!Route::classify(&Method::GET, "/.well-known/jwks.json").runs_at_edge());
        assert_eq!(Route::classify(&Method::POST, &f), Route::MethodNotAllowed);
    }

    #[test]
    fn auth_table_matches_the_original() {
        let f = "/v1/files/x";
        assert!(requires_auth(&Method::PUT, f));
        assert!(!requires_auth(&Method::GET, f));
        assert!(!requires_auth(&Method::HEAD, f));
        for m in [Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(requires_auth(&m, "/v1/bundles/x"));
        }
        assert!(!requires_auth(&Method::GET, "/v1/bundles/x"));
        assert!(!requires_auth(&Method::POST, "/v1/search"));
        assert!(requires_auth(&Method::GET, "/v1/subscriptions"));
        assert!(requires_auth(&Method::PUT, "/v1/collections"));
        assert!(!requires_auth(&Method::POST, "/v1/bundles/x/checkout"));
    }
}
