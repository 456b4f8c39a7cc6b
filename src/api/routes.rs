//! The route table: which request is which route, and the rules of each route, stated
//! once. Every route says who may call it, whether it is a write (refused in read-only
//! mode), whether the edge answers it, what body it takes (content type and size limit),
//! which API it belongs to, and which statuses it answers. The router of both targets
//! ([`super::App::handle`], the native server's body reader, the edge worker) enforces
//! these rules; handlers never authenticate or check a body's type themselves.
//!
//! `schema/dss-api.json` (the OpenAPI document the `hca` client builds its commands from)
//! must agree with this table: a test checks every operation, its `security` and its
//! responses.

use http::Method;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// A valid token whose group claim is one of these (the original's
    /// `@authorized_group_required`).
    Groups(&'static [&'static str]),
    /// A valid token of group `hca` whose email is in `ADMIN_USER_EMAILS`.
    Admin,
}

impl Access {
    /// Whether a bearer token is needed at all (the OpenAPI `security` mark).
    pub fn needs_token(&self) -> bool {
        !matches!(self, Access::Public)
    }
}

/// The body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// None: whatever is sent is not read.
    None,
    /// A JSON document (`application/json` or `…+json`, UTF-8) of at most `limit` bytes.
    Json {
        /// Largest accepted body, in bytes (413 `payload_too_large` past it).
        limit: usize,
    },
}

impl BodyRule {
    /// The most bytes a request of this route may send.
    pub fn limit(&self) -> usize {
        match self {
            BodyRule::None => 0,
            BodyRule::Json { limit } => *limit,
        }
    }
}

/// The API a route belongs to; each renders its own errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The DSS v1 API (`/v1/…`), described by `schema/dss-api.json`.
    DssV1,
    /// Service routes outside `/v1` (version, health, downloads, dev issuer, client secrets).
    Service,
}

/// The rules of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Method.
    pub method: Method,
    /// Path template, as in the OpenAPI document (`/v1/files/{uuid}`).
    pub path: &'static str,
    /// Which API it belongs to.
    pub api: Api,
    /// Who may call it.
    pub access: Access,
    /// Whether it changes stored data (refused with 503 `read_only` in read-only mode).
    pub write: bool,
    /// Whether the edge worker answers it itself (from the replicas' buckets).
    pub edge: bool,
    /// The body it takes.
    pub body: BodyRule,
    /// Every status it answers with, as documented in the OpenAPI document.
    pub responses: &'static [u16],
}

/// Body limit of small JSON documents (a file PUT, a tombstone's reason).
pub const SMALL_BODY: usize = 64 * 1024;
/// Largest bundle PUT body (a bundle of tens of thousands of files; the original's API
/// gateway allowed 10 MB).
pub const BUNDLE_BODY: usize = 16 * 1024 * 1024;
/// Largest PATCH body (1,000 files added and 1,000 removed).
pub const PATCH_BODY: usize = 2 * 1024 * 1024;
/// Largest search body (queries are documents of a few KiB; the search budget bounds the
/// work of whatever fits).
pub const SEARCH_BODY: usize = 1024 * 1024;

/// The `hca` group, required of every write as in the original.
pub const HCA: &[&str] = &["hca"];

macro_rules! spec {
    ($m:ident $path:literal, $api:ident, $access:expr, write: $w:literal, edge: $e:literal, body: $body:expr, [$($r:literal),*]) => {
        RouteSpec {
            method: Method::$m,
            path: $path,
            api: Api::$api,
            access: $access,
            write: $w,
            edge: $e,
            body: $body,
            responses: &[$($r),*],
        }
    };
}

/// `GET /version`.
pub static VERSION: RouteSpec =
    spec!(GET "/version", Service, Access::Public, write: false, edge: true, body: BodyRule::None, [200]);
/// `GET /internal/health`.
pub static HEALTH: RouteSpec =
    spec!(GET "/internal/health", Service, Access::Public, write: false, edge: true, body: BodyRule::None, [200]);
/// `GET /internal/application_secrets`: the OAuth client secrets the `hca` CLI logs in with.
pub static APPLICATION_SECRETS: RouteSpec = spec!(GET "/internal/application_secrets", Service, Access::Public, write: false, edge: false, body: BodyRule::None, [200, 404]);
/// `GET /internal/replication`: what replication is doing, per replica pair (admins).
pub static REPLICATION: RouteSpec = spec!(GET "/internal/replication", Service, Access::Admin, write: false, edge: false, body: BodyRule::None, [200, 401, 403, 503]);
/// `GET /v1/swagger.json`.
pub static SWAGGER: RouteSpec =
    spec!(GET "/v1/swagger.json", Service, Access::Public, write: false, edge: true, body: BodyRule::None, [200]);
/// `GET /.well-known/openid-configuration` (the dev issuer).
pub static OPENID_CONFIGURATION: RouteSpec = spec!(GET "/.well-known/openid-configuration", Service, Access::Public, write: false, edge: false, body: BodyRule::None, [200, 404]);
/// `GET /.well-known/jwks.json` (the dev issuer).
pub static JWKS: RouteSpec = spec!(GET "/.well-known/jwks.json", Service, Access::Public, write: false, edge: false, body: BodyRule::None, [200, 404]);
/// `GET /blob/{store}/{key}`: signed downloads of local replicas.
pub static BLOB: RouteSpec = spec!(GET "/blob/{store}/{key}", Service, Access::Public, write: false, edge: false, body: BodyRule::None, [200, 206, 403, 404, 416]);
/// `POST /v1/search`.
pub static SEARCH: RouteSpec = spec!(POST "/v1/search", DssV1, Access::Public, write: false, edge: false,
    body: BodyRule::Json { limit: SEARCH_BODY }, [200, 206, 400, 413, 415, 500, 501, 503, 504]);
/// `HEAD /v1/files/{uuid}`.
pub static FILE_HEAD: RouteSpec = spec!(HEAD "/v1/files/{uuid}", DssV1, Access::Public, write: false, edge: true,
    body: BodyRule::None, [200, 400, 404, 422, 500, 503, 504]);
/// `GET /v1/files/{uuid}`.
pub static FILE_GET: RouteSpec = spec!(GET "/v1/files/{uuid}", DssV1, Access::Public, write: false, edge: true,
    body: BodyRule::None, [302, 400, 404, 422, 500, 503, 504]);
/// `PUT /v1/files/{uuid}`.
pub static FILE_PUT: RouteSpec = spec!(PUT "/v1/files/{uuid}", DssV1, Access::Groups(HCA), write: true, edge: false,
    body: BodyRule::Json { limit: SMALL_BODY }, [200, 201, 202, 400, 401, 403, 409, 413, 415, 422, 500, 503, 504]);
/// `GET /v1/bundles/all`.
pub static BUNDLES_ALL: RouteSpec = spec!(GET "/v1/bundles/all", DssV1, Access::Public, write: false, edge: true,
    body: BodyRule::None, [200, 206, 400, 500, 503, 504]);
/// `GET /v1/bundles/{uuid}`.
pub static BUNDLE_GET: RouteSpec = spec!(GET "/v1/bundles/{uuid}", DssV1, Access::Public, write: false, edge: true,
    body: BodyRule::None, [200, 206, 400, 404, 500, 503, 504]);
/// `PUT /v1/bundles/{uuid}`.
pub static BUNDLE_PUT: RouteSpec = spec!(PUT "/v1/bundles/{uuid}", DssV1, Access::Groups(HCA), write: true, edge: false,
    body: BodyRule::Json { limit: BUNDLE_BODY }, [200, 201, 400, 401, 403, 409, 413, 415, 500, 503, 504]);
/// `PATCH /v1/bundles/{uuid}`.
pub static BUNDLE_PATCH: RouteSpec = spec!(PATCH "/v1/bundles/{uuid}", DssV1, Access::Groups(HCA), write: true, edge: false,
    body: BodyRule::Json { limit: PATCH_BODY }, [200, 400, 401, 403, 404, 409, 413, 415, 500, 503, 504]);
/// `DELETE /v1/bundles/{uuid}`.
pub static BUNDLE_DELETE: RouteSpec = spec!(DELETE "/v1/bundles/{uuid}", DssV1, Access::Admin, write: true, edge: false,
    body: BodyRule::Json { limit: SMALL_BODY }, [200, 400, 401, 403, 404, 409, 413, 415, 500, 503, 504]);

/// `POST /v1/bundles/{uuid}/checkout`.
pub static CHECKOUT_POST: RouteSpec = spec!(POST "/v1/bundles/{uuid}/checkout", DssV1, Access::Public, write: false, edge: false,
    body: BodyRule::Json { limit: SMALL_BODY }, [200, 400, 404, 413, 415, 500, 503, 504]);
/// The groups that may subscribe (the original's `['hca', 'public']`).
pub const SUBSCRIBERS: &[&str] = &["hca", "public"];

/// `GET /v1/subscriptions`.
pub static SUBSCRIPTIONS_GET: RouteSpec = spec!(GET "/v1/subscriptions", DssV1, Access::Groups(SUBSCRIBERS), write: false, edge: false,
    body: BodyRule::None, [200, 400, 401, 403, 500, 503, 504]);
/// `PUT /v1/subscriptions`.
pub static SUBSCRIPTION_PUT: RouteSpec = spec!(PUT "/v1/subscriptions", DssV1, Access::Groups(SUBSCRIBERS), write: true, edge: false,
    body: BodyRule::Json { limit: SMALL_BODY }, [201, 400, 401, 403, 406, 413, 415, 500, 503, 504]);
/// `GET /v1/subscriptions/{uuid}`.
pub static SUBSCRIPTION_GET: RouteSpec = spec!(GET "/v1/subscriptions/{uuid}", DssV1, Access::Groups(SUBSCRIBERS), write: false, edge: false,
    body: BodyRule::None, [200, 400, 401, 403, 404, 500, 503, 504]);
/// `DELETE /v1/subscriptions/{uuid}`.
pub static SUBSCRIPTION_DELETE: RouteSpec = spec!(DELETE "/v1/subscriptions/{uuid}", DssV1, Access::Groups(SUBSCRIBERS), write: true, edge: false,
    body: BodyRule::None, [200, 400, 401, 403, 404, 500, 503, 504]);
/// `GET /v1/subscriptions/{uuid}/deliveries`: the subscription's delivery log (ours).
pub static SUBSCRIPTION_DELIVERIES: RouteSpec = spec!(GET "/v1/subscriptions/{uuid}/deliveries", DssV1, Access::Groups(SUBSCRIBERS), write: false, edge: false,
    body: BodyRule::None, [200, 400, 401, 403, 404, 500, 503, 504]);

/// `GET /v1/collections`.
pub static COLLECTIONS_GET: RouteSpec = spec!(GET "/v1/collections", DssV1, Access::Groups(HCA), write: false, edge: false,
    body: BodyRule::None, [200, 206, 400, 401, 403, 500, 503, 504]);
/// `PUT /v1/collections`.
pub static COLLECTION_PUT: RouteSpec = spec!(PUT "/v1/collections", DssV1, Access::Groups(HCA), write: true, edge: false,
    body: BodyRule::Json { limit: PATCH_BODY }, [201, 400, 401, 403, 409, 413, 415, 422, 500, 503, 504]);
/// `GET /v1/collections/{uuid}`.
pub static COLLECTION_GET: RouteSpec = spec!(GET "/v1/collections/{uuid}", DssV1, Access::Groups(HCA), write: false, edge: false,
    body: BodyRule::None, [200, 400, 401, 403, 404, 500, 503, 504]);
/// `PATCH /v1/collections/{uuid}`.
pub static COLLECTION_PATCH: RouteSpec = spec!(PATCH "/v1/collections/{uuid}", DssV1, Access::Groups(HCA), write: true, edge: false,
    body: BodyRule::Json { limit: PATCH_BODY }, [200, 400, 401, 403, 404, 409, 413, 415, 422, 500, 503, 504]);
/// `DELETE /v1/collections/{uuid}`.
pub static COLLECTION_DELETE: RouteSpec = spec!(DELETE "/v1/collections/{uuid}", DssV1, Access::Groups(HCA), write: true, edge: false,
    body: BodyRule::None, [200, 400, 401, 403, 404, 409, 500, 503, 504]);
/// `GET /v1/events`.
pub static EVENTS_GET: RouteSpec = spec!(GET "/v1/events", DssV1, Access::Public, write: false, edge: false,
    body: BodyRule::None, [200, 206, 400, 500, 503, 504]);
/// `GET /v1/events/{uuid}`.
pub static EVENT_GET: RouteSpec = spec!(GET "/v1/events/{uuid}", DssV1, Access::Public, write: false, edge: false,
    body: BodyRule::None, [200, 400, 404, 500, 503, 504]);

/// `GET /v1/bundles/checkout/{checkout_job_id}`.
pub static CHECKOUT_GET: RouteSpec = spec!(GET "/v1/bundles/checkout/{checkout_job_id}", DssV1, Access::Public, write: false, edge: false,
    body: BodyRule::None, [200, 400, 404, 500, 503, 504]);

/// Every route, in one list (the OpenAPI agreement test walks it).
pub const TABLE: &[&RouteSpec] = &[
    &VERSION,
    &HEALTH,
    &APPLICATION_SECRETS,
    &REPLICATION,
    &SWAGGER,
    &OPENID_CONFIGURATION,
    &JWKS,
    &BLOB,
    &SEARCH,
    &FILE_HEAD,
    &FILE_GET,
    &FILE_PUT,
    &BUNDLES_ALL,
    &BUNDLE_GET,
    &BUNDLE_PUT,
    &BUNDLE_PATCH,
    &BUNDLE_DELETE,
    &CHECKOUT_POST,
    &CHECKOUT_GET,
    &SUBSCRIPTIONS_GET,
    &SUBSCRIPTION_PUT,
    &SUBSCRIPTION_GET,
    &SUBSCRIPTION_DELETE,
    &SUBSCRIPTION_DELIVERIES,
    &COLLECTIONS_GET,
    &COLLECTION_PUT,
    &COLLECTION_GET,
    &COLLECTION_PATCH,
    &COLLECTION_DELETE,
    &EVENTS_GET,
    &EVENT_GET,
];

/// A recognised request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /version`.
    Version,
    /// `GET /internal/health`.
    Health,
    /// `GET /internal/application_secrets`.
    ApplicationSecrets,
    /// `GET /internal/replication`.
    Replication,
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
    /// `POST /v1/bundles/{uuid}/checkout`.
    CheckoutPost(&'a str),
    /// `GET /v1/bundles/checkout/{id}`.
    CheckoutGet(&'a str),
    /// `GET /v1/subscriptions`.
    SubscriptionsGet,
    /// `PUT /v1/subscriptions`.
    SubscriptionPut,
    /// `GET /v1/subscriptions/{uuid}`.
    SubscriptionGet(&'a str),
    /// `DELETE /v1/subscriptions/{uuid}`.
    SubscriptionDelete(&'a str),
    /// `GET /v1/subscriptions/{uuid}/deliveries`.
    SubscriptionDeliveries(&'a str),
    /// `GET /v1/collections`.
    CollectionsGet,
    /// `PUT /v1/collections`.
    CollectionPut,
    /// `GET /v1/collections/{uuid}`.
    CollectionGet(&'a str),
    /// `PATCH /v1/collections/{uuid}`.
    CollectionPatch(&'a str),
    /// `DELETE /v1/collections/{uuid}`.
    CollectionDelete(&'a str),
    /// `GET /v1/events`.
    EventsGet,
    /// `GET /v1/events/{uuid}`.
    EventGet(&'a str),
    /// A known path with a method it does not take.
    MethodNotAllowed,
    /// Anything else (including API routes this server does not implement yet).
    Unknown,
}

impl<'a> Route<'a> {
    /// Classify `method` and `path` (percent-encoded, as received). `HEAD` of a `GET`
    /// route is that route (its body is dropped by the router).
    pub fn classify(method: &Method, path: &'a str) -> Route<'a> {
        // Download keys hold slashes of their own: `/blob/{store}/{key…}`.
        if path.starts_with("/blob/") {
            return match *method {
                Method::GET | Method::HEAD => Route::Blob,
                _ => Route::Unknown,
            };
        }
        let mut segs = [""; 4];
        let mut n = 0;
        for s in path.trim_start_matches('/').split('/') {
            if n == segs.len() {
                return Route::Unknown;
            }
            segs[n] = s;
            n += 1;
        }
        let m = method.as_str();
        match (m, &segs[..n]) {
            ("GET" | "HEAD", ["version"]) => Route::Version,
            ("GET" | "HEAD", ["internal", "health"]) => Route::Health,
            ("GET" | "HEAD", ["internal", "application_secrets"]) => Route::ApplicationSecrets,
            ("GET" | "HEAD", ["internal", "replication"]) => Route::Replication,
            ("GET" | "HEAD", ["v1", "swagger.json"]) => Route::Swagger,
            ("GET" | "HEAD", [".well-known", "openid-configuration"]) => Route::OpenidConfiguration,
            ("GET" | "HEAD", [".well-known", "jwks.json"]) => Route::Jwks,
            ("GET", ["v1", "files", uuid]) => Route::FileGet(uuid),
            ("HEAD", ["v1", "files", uuid]) => Route::FileHead(uuid),
            ("PUT", ["v1", "files", uuid]) => Route::FilePut(uuid),
            ("GET" | "HEAD", ["v1", "bundles", "all"]) => Route::BundlesAll,
            ("GET" | "HEAD", ["v1", "bundles", uuid]) => Route::BundleGet(uuid),
            ("PUT", ["v1", "bundles", uuid]) => Route::BundlePut(uuid),
            ("PATCH", ["v1", "bundles", uuid]) => Route::BundlePatch(uuid),
            ("DELETE", ["v1", "bundles", uuid]) => Route::BundleDelete(uuid),
            ("POST", ["v1", "search"]) => Route::Search,
            ("POST", ["v1", "bundles", uuid, "checkout"]) => Route::CheckoutPost(uuid),
            ("GET" | "HEAD", ["v1", "bundles", "checkout", id]) => Route::CheckoutGet(id),
            (_, ["v1", "bundles", _, "checkout"]) | (_, ["v1", "bundles", "checkout", _]) => Route::MethodNotAllowed,
            ("GET" | "HEAD", ["v1", "collections"]) => Route::CollectionsGet,
            ("PUT", ["v1", "collections"]) => Route::CollectionPut,
            ("GET" | "HEAD", ["v1", "collections", uuid]) => Route::CollectionGet(uuid),
            ("PATCH", ["v1", "collections", uuid]) => Route::CollectionPatch(uuid),
            ("DELETE", ["v1", "collections", uuid]) => Route::CollectionDelete(uuid),
            ("GET" | "HEAD", ["v1", "events"]) => Route::EventsGet,
            ("GET" | "HEAD", ["v1", "events", uuid]) => Route::EventGet(uuid),
            (_, ["v1", "collections"]) | (_, ["v1", "collections", _]) => Route::MethodNotAllowed,
            ("GET" | "HEAD", ["v1", "subscriptions"]) => Route::SubscriptionsGet,
            ("PUT", ["v1", "subscriptions"]) => Route::SubscriptionPut,
            ("GET" | "HEAD", ["v1", "subscriptions", uuid]) => Route::SubscriptionGet(uuid),
            ("DELETE", ["v1", "subscriptions", uuid]) => Route::SubscriptionDelete(uuid),
            ("GET" | "HEAD", ["v1", "subscriptions", uuid, "deliveries"]) => Route::SubscriptionDeliveries(uuid),
            (_, ["v1", "subscriptions"])
            | (_, ["v1", "subscriptions", _])
            | (_, ["v1", "subscriptions", _, "deliveries"]) => Route::MethodNotAllowed,
            (_, ["v1", "files", _]) | (_, ["v1", "bundles", _]) | (_, ["v1", "search"]) => Route::MethodNotAllowed,
            _ => Route::Unknown,
        }
    }

    /// The rules of this route; `None` for requests that are no route at all.
    pub fn spec(&self) -> Option<&'static RouteSpec> {
        Some(match self {
            Route::Version => &VERSION,
            Route::Health => &HEALTH,
            Route::ApplicationSecrets => &APPLICATION_SECRETS,
            Route::Replication => &REPLICATION,
            Route::Swagger => &SWAGGER,
            Route::OpenidConfiguration => &OPENID_CONFIGURATION,
            Route::Jwks => &JWKS,
            Route::Blob => &BLOB,
            Route::FileGet(_) => &FILE_GET,
            Route::FileHead(_) => &FILE_HEAD,
            Route::FilePut(_) => &FILE_PUT,
            Route::BundlesAll => &BUNDLES_ALL,
            Route::BundleGet(_) => &BUNDLE_GET,
            Route::BundlePut(_) => &BUNDLE_PUT,
            Route::BundlePatch(_) => &BUNDLE_PATCH,
            Route::BundleDelete(_) => &BUNDLE_DELETE,
            Route::Search => &SEARCH,
            Route::CheckoutPost(_) => &CHECKOUT_POST,
            Route::CheckoutGet(_) => &CHECKOUT_GET,
            Route::SubscriptionsGet => &SUBSCRIPTIONS_GET,
            Route::SubscriptionPut => &SUBSCRIPTION_PUT,
            Route::SubscriptionGet(_) => &SUBSCRIPTION_GET,
            Route::SubscriptionDelete(_) => &SUBSCRIPTION_DELETE,
            Route::SubscriptionDeliveries(_) => &SUBSCRIPTION_DELIVERIES,
            Route::CollectionsGet => &COLLECTIONS_GET,
            Route::CollectionPut => &COLLECTION_PUT,
            Route::CollectionGet(_) => &COLLECTION_GET,
            Route::CollectionPatch(_) => &COLLECTION_PATCH,
            Route::CollectionDelete(_) => &COLLECTION_DELETE,
            Route::EventsGet => &EVENTS_GET,
            Route::EventGet(_) => &EVENT_GET,
            Route::MethodNotAllowed | Route::Unknown => return None,
        })
    }

    /// Whether the edge answers this request itself (everything else is forwarded).
    /// A 405 is answered wherever it is found.
    pub fn runs_at_edge(&self) -> bool {
        match self.spec() {
            Some(s) => s.edge,
            None => *self == Route::MethodNotAllowed,
        }
    }

    /// The most body bytes this request may send (0: its body is not read).
    pub fn body_limit(&self) -> usize {
        self.spec().map_or(0, |s| s.body.limit())
    }
}

/// Whether a bearer token is required for `method` on `path`: the route table's rule, and
/// for paths this build does not know, the original's `security` marks of the APIs still
/// to come (subscriptions, collections), so that the edge refuses them without a token
/// even in front of a newer backend.
pub fn requires_auth(method: &Method, path: &str) -> bool {
    match Route::classify(method, path).spec() {
        Some(s) => s.access.needs_token(),
        None => {
            let p = path.trim_start_matches('/');
            let future = ["v1/subscriptions", "v1/collections"]
                .iter()
                .any(|f| p == *f || p.strip_prefix(f).is_some_and(|r| r.starts_with('/')));
            future && *method != Method::OPTIONS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Statuses any route may answer (bad input, overload, deadlines, internal failures;
    /// 502 from a gateway in front), which the document may list for any route.
    const COMMON: [u16; 6] = [400, 405, 500, 502, 503, 504];

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
        assert_eq!(Route::classify(&Method::GET, "/v1/files/a/b/c/d/e"), Route::Unknown);
    }

    #[test]
    fn every_write_needs_the_hca_group_and_deletes_an_admin() {
        for r in TABLE {
            if r.write && r.path.starts_with("/v1/subscriptions") {
                // Subscriptions change no data: the original let `public` tokens make them.
                assert_eq!(r.access, Access::Groups(SUBSCRIBERS), "{} {}", r.method, r.path);
            } else if r.write {
                if r.path.starts_with("/v1/collections") && r.method == Method::DELETE {
                    assert_eq!(r.access, Access::Groups(HCA));
                    continue; // a collection's DELETE takes no body, as the original's
                }
                assert!(
                    matches!(r.access, Access::Groups(HCA) | Access::Admin),
                    "{} {}",
                    r.method,
                    r.path
                );
                assert_ne!(r.body, BodyRule::None, "{} {}", r.method, r.path);
            }
        }
        assert_eq!(BUNDLE_DELETE.access, Access::Admin);
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
        assert!(requires_auth(&Method::GET, "/v1/subscriptions/x"));
        assert!(requires_auth(&Method::PUT, "/v1/collections"));
        assert!(!requires_auth(&Method::GET, "/v1/collectionsx"));
        assert!(!requires_auth(&Method::POST, "/v1/bundles/x/checkout"));
    }

    /// The OpenAPI document (which the `hca` client builds its commands from) and this
    /// table describe the same DSS v1 routes: the same operations, the same `security`,
    /// and every status a route answers is documented.
    #[test]
    fn table_and_openapi_document_agree() {
        let doc: Value = serde_json::from_str(include_str!("../../schema/dss-api.json")).expect("schema JSON");
        let base = doc["basePath"].as_str().expect("basePath");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in paths {
            for (method, op) in ops.as_object().expect("path item") {
                if method == "parameters" {
                    continue;
                }
                documented.insert((method.to_ascii_uppercase(), format!("{base}{path}")));
                let spec = TABLE
                    .iter()
                    .find(|r| r.method.as_str().eq_ignore_ascii_case(method) && r.path == format!("{base}{path}"))
                    .unwrap_or_else(|| panic!("{method} {base}{path} is documented but not in the route table"));
                let secured = op
                    .get("security")
                    .is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
                assert_eq!(secured, spec.access.needs_token(), "security of {method} {path}");
                let responses = op["responses"].as_object().expect("responses");
                for status in spec.responses {
                    assert!(
                        responses.contains_key(&status.to_string()),
                        "{method} {path}: status {status} is answered but not documented"
                    );
                }
                for status in responses.keys().filter(|k| *k != "default") {
                    let n: u16 = status.parse().expect("numeric status");
                    assert!(
                        spec.responses.contains(&n) || COMMON.contains(&n),
                        "{method} {path}: status {n} is documented but never answered"
                    );
                }
            }
        }
        for r in TABLE.iter().filter(|r| r.api == Api::DssV1) {
            assert!(
                documented.contains(&(r.method.to_string(), r.path.to_string())),
                "{} {} is a route but not in schema/dss-api.json",
                r.method,
                r.path
            );
        }
    }
}
