//! The edge rim: the crate as a Cloudflare Worker.
//!
//! It builds the one [`App`] from the worker's variables, answers the read routes from
//! the S3/GCS replicas itself (through the same storage code as the backend, over
//! `fetch`), verifies tokens before anything is forwarded, and forwards every other
//! request to `BACKEND_URL` unchanged. What it decides is in [`crate::api::edge`]; this
//! module only carries it out with the Workers APIs (fetch, Cache API, timers, clock).

use crate::api::edge::{self as policy, EdgeConfig};
use crate::api::replicas::StoreKind;
use crate::api::{cors, ApiError, App, Body, Replica, Replicas, Route};
use crate::auth::jwks::{parse_jwks, KeySet};
use crate::auth::Authenticator;
use crate::http::fetch::{FetchClient, JsClock, WorkerSleeper};
use crate::model::Clock;
use crate::storage::cached::{Cached, ObjectCache};
use crate::storage::memory::MemoryStore;
use crate::storage::{gcs, s3, AnyStore};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, StatusCode};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use worker::{event, Context, Env, HttpRequest};

/// A replica's bucket read at the edge, its documents cached in the Cache API.
type EdgeStore = Cached<AnyStore, WorkerCache>;
type EdgeApp = App<EdgeStore, FetchClient, WorkerSleeper>;

/// Everything that outlives one request in an isolate: the app (with its in-memory
/// caches of documents, keys and verified tokens) and the settings.
struct Edge {
    app: EdgeApp,
    cfg: EdgeConfig,
    replicas: policy::EdgeReplicas,
    http: FetchClient,
}

thread_local! {
    static EDGE: RefCell<Option<Rc<Edge>>> = const { RefCell::new(None) };
}

/// The Workers Cache API of the data centre, as an [`ObjectCache`]. Entries are
/// responses under a synthetic URL per key.
pub struct WorkerCache;

fn cache_url(key: &str) -> String {
    let enc = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
    format!("https://dss-edge-cache.invalid/{enc}")
}

impl ObjectCache for WorkerCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let mut resp = worker::Cache::default().get(cache_url(key), false).await.ok()??;
        resp.bytes().await.ok().map(Bytes::from)
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        let Ok(mut resp) = worker::Response::from_bytes(value.to_vec()) else {
            return;
        };
        let _ = resp
            .headers_mut()
            .set("cache-control", &format!("public, max-age={}", ttl.as_secs().max(1)));
        if let Err(e) = worker::Cache::default().put(cache_url(key), resp).await {
            tracing::debug!("cache put failed: {e}");
        }
    }

    async fn delete(&self, key: &str) {
        let _ = worker::Cache::default().delete(cache_url(key), false).await;
    }
}

fn lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| {
        env.var(k)
            .ok()
            .map(|v| v.to_string())
            .or_else(|| env.secret(k).ok().map(|s| s.to_string()))
    }
}

fn build(env: &Env) -> Result<Edge, String> {
    let vars = lookup(env);
    let cfg = EdgeConfig::from_vars(&vars).map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(JsClock);
    let http = FetchClient::new(Duration::from_secs(30));
    let list_ttl = cfg.list_ttl;
    let cached = |s: AnyStore, ns: String| {
        Cached::new(s, WorkerCache, ns, list_ttl, clock.clone()).with_immutable(crate::bucket::keys::immutable_document)
    };
    // A replica without an edge bucket gets an empty stand-in; its reads are forwarded.
    let absent = |name: &str| {
        cached(
            AnyStore::Memory(MemoryStore::new(name, None, clock.clone())),
            String::new(),
        )
    };
    // A replica's own variables first (DSS_REPLICA_{NAME}_AWS_ACCESS_KEY_ID, …), then the
    // worker's, as at the backend.
    let mut list = Vec::with_capacity(cfg.replicas.len());
    for spec in &cfg.replicas {
        let prefix = spec.var_prefix();
        let own = |n: &str| vars(&format!("{prefix}{n}")).or_else(|| vars(n));
        let open = |bucket: &str| -> Result<EdgeStore, String> {
            match spec.kind {
                StoreKind::S3 => {
                    let c = s3::S3Config::from_vars(bucket, &own).map_err(|e| e.to_string())?;
                    let s = s3::S3Store::new(c, http.clone(), WorkerSleeper, clock.clone());
                    Ok(cached(AnyStore::S3(Box::new(s)), format!("s3/{bucket}")))
                }
                StoreKind::Gs => {
                    let c = gcs::GcsConfig::from_vars(bucket, &own).map_err(|e| e.to_string())?;
                    let s = gcs::GcsStore::new(c, http.clone(), WorkerSleeper, clock.clone());
                    Ok(cached(AnyStore::Gcs(Box::new(s)), format!("gs/{bucket}")))
                }
                // In the backend's data directory: its reads are forwarded.
                StoreKind::Local => Ok(absent(&spec.name)),
            }
        };
        let main = match &spec.bucket {
            Some(b) => open(b)?,
            None => absent(&spec.name),
        };
        let checkout = match &spec.checkout {
            Some(c) => open(c)?,
            None => absent(&spec.name),
        };
        let r = Replica::new(&spec.name, main, checkout);
        // One freshness rule at the edge: the isolate's listings live as long as the cached ones.
        r.cache.docs.listings.set_freshness(cfg.list_ttl);
        list.push(r);
    }
    let mut keys = Vec::new();
    if let Some(doc) = &cfg.trusted_jwks {
        keys = parse_jwks(doc.as_bytes()).map_err(|e| format!("worker setting DSS_TRUSTED_JWKS: {e}"))?;
    }
    let keyset = KeySet::new(
        Some(http.clone()),
        keys,
        cfg.auth.openid_provider.clone(),
        clock.clone(),
    );
    let swagger = serde_json::from_str(include_str!("../../schema/dss-api.json"))
        .map_err(|e| format!("embedded OpenAPI document: {e}"))?;
    let app = App {
        config: cfg.api.clone(),
        replicas: Replicas::new(list),
        staging: None,
        auth: Authenticator::new(cfg.auth.clone(), keyset, clock.clone()),
        signer: None,
        dev_jwks: None,
        clock,
        sleeper: WorkerSleeper,
        swagger,
        bucket_store: None,
        jobs: None,
        search: None,
        subscriptions: None,
        collections: None,
        events: None,
    };
    Ok(Edge {
        replicas: cfg.edge_replicas(),
        app,
        cfg,
        http,
    })
}

fn edge(env: &Env) -> Result<Rc<Edge>, String> {
    if let Some(e) = EDGE.with(|e| e.borrow().clone()) {
        return Ok(e);
    }
    let e = Rc::new(build(env)?);
    EDGE.with(|slot| *slot.borrow_mut() = Some(e.clone()));
    Ok(e)
}

/// A response the worker sends: made here, or the backend's (streamed through).
type Out = http::Response<EdgeBody>;

/// The two kinds of response body.
enum EdgeBody {
    Local(Body),
    Remote(worker::Body),
}

impl http_body::Body for EdgeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            EdgeBody::Local(b) => std::pin::Pin::new(b).poll_frame(cx),
            EdgeBody::Remote(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| std::io::Error::other(e.to_string())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::Local(b) => b.is_end_stream(),
            EdgeBody::Remote(b) => b.is_end_stream(),
        }
    }
}

fn local(r: crate::api::Response) -> Out {
    r.map(EdgeBody::Local)
}

fn error(e: ApiError, method: &Method, path: &str) -> Out {
    local(e.into_response(method, path))
}

/// Read a request body, refusing more than `limit` bytes.
async fn read_body(body: worker::Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let mut s = body;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|_| ApiError::IllegalArguments("could not read the request body".into()))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Headers that describe one hop, not the request.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade" | "content-length"
    ) || name.starts_with("cf-")
}

/// Send the request to the backend with method, path, query, headers and body intact,
/// and hand back its answer as it is (redirects included).
async fn forward(edge: &Edge, parts: &http::request::Parts, body: Bytes) -> Result<Out, ApiError> {
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{}", edge.cfg.backend_url, pq);
    let mut req = http::Request::builder().method(parts.method.clone()).uri(&url);
    for (k, v) in &parts.headers {
        if !hop_by_hop(k.as_str()) {
            req = req.header(k, v);
        }
    }
    if let Some(host) = parts.uri.authority() {
        req = req.header("x-forwarded-host", host.as_str());
    }
    if let Some(scheme) = parts.uri.scheme_str() {
        req = req.header("x-forwarded-proto", scheme);
    }
    let req = req
        .body(())
        .map_err(|e| ApiError::IllegalArguments(format!("cannot forward this request: {e}")))?;
    let (p, ()) = req.into_parts();
    let resp = edge.http.exchange(p, Some(body)).await.map_err(|e| {
        tracing::error!("backend unreachable: {e}");
        ApiError::Unavailable("the backend is unreachable; try again later".into())
    })?;
    let resp: worker::HttpResponse = resp
        .try_into()
        .map_err(|e: worker::Error| ApiError::Internal(format!("backend answer: {e}")))?;
    Ok(resp.map(EdgeBody::Remote))
}

/// A search answer kept in the cache: status, the headers that matter, body.
fn pack_search(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Bytes {
    let hs: Vec<(String, String)> = ["content-type", "link"]
        .iter()
        .filter_map(|n| Some((n.to_string(), headers.get(*n)?.to_str().ok()?.to_string())))
        .collect();
    let mut out = serde_json::to_vec(&(status, hs)).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn unpack_search(b: &[u8]) -> Option<Out> {
    let nl = b.iter().position(|c| *c == b'\n')?;
    let (status, hs): (u16, Vec<(String, String)>) = serde_json::from_slice(&b[..nl]).ok()?;
    let mut r = http::Response::new(EdgeBody::Local(Body::Full(Bytes::copy_from_slice(&b[nl + 1..]))));
    *r.status_mut() = StatusCode::from_u16(status).ok()?;
    for (k, v) in hs {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k), HeaderValue::try_from(v)) {
            r.headers_mut().insert(k, v);
        }
    }
    Some(r)
}

/// Largest search answer kept (500 summaries are far smaller; raw pages are 10 documents).
const SEARCH_ANSWER_MAX: usize = 32 * 1024 * 1024;

/// `POST /v1/search`: from the cache when the same query was answered within the TTL,
/// else from the backend (and kept if complete).
async fn search(edge: &Edge, parts: &http::request::Parts, body: Bytes) -> Result<Out, ApiError> {
    let query = crate::api::params::Query::parse(parts.uri.query().unwrap_or(""));
    let key = (!edge.cfg.search_ttl.is_zero())
        .then(|| policy::search_cache_key(&query, &body))
        .flatten()
        .map(|k| format!("search/{k}"));
    let Some(key) = key else {
        return forward(edge, parts, body).await;
    };
    if let Some(mut hit) = WorkerCache.get(&key).await.and_then(|b| unpack_search(&b)) {
        hit.headers_mut()
            .insert(policy::EDGE_CACHE_HEADER, HeaderValue::from_static("hit"));
        return Ok(hit);
    }
    let resp = forward(edge, parts, body).await?;
    let (mut head, rbody) = resp.into_parts();
    head.headers
        .insert(policy::EDGE_CACHE_HEADER, HeaderValue::from_static("miss"));
    if !policy::search_answer_cacheable(head.status.as_u16(), &head.headers) {
        return Ok(http::Response::from_parts(head, rbody));
    }
    let EdgeBody::Remote(stream) = rbody else {
        return Ok(http::Response::from_parts(head, rbody));
    };
    // Search answers are small JSON documents (at most 500 summaries): read whole to keep.
    let bytes = read_body(stream, SEARCH_ANSWER_MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("backend search answer: {e}")))?;
    WorkerCache
        .put(
            &key,
            pack_search(head.status.as_u16(), &head.headers, &bytes),
            edge.cfg.search_ttl,
        )
        .await;
    Ok(http::Response::from_parts(head, EdgeBody::Local(Body::Full(bytes))))
}

async fn handle(edge: &Edge, req: HttpRequest) -> Out {
    let (mut parts, body) = req.into_parts();
    // One id for this request here and at the backend, so that both logs name it.
    let id = HeaderValue::from_str(&crate::api::request_id(&parts.headers)).ok();
    if let Some(v) = &id {
        parts.headers.insert(crate::api::REQUEST_ID, v.clone());
    }
    let (method, path) = (parts.method.clone(), parts.uri.path().to_string());
    if let Some(pre) = cors::preflight(&edge.cfg.api.cors_origins, &method, &parts.headers) {
        return pre.map(|()| EdgeBody::Local(Body::empty()));
    }
    let query = crate::api::params::Query::parse(parts.uri.query().unwrap_or(""));
    let route = Route::classify(&method, &path);
    let mut out = if policy::answer_at_edge(&route, &query, &edge.replicas) {
        // Reads carry no body; the router gets none.
        let r = edge
            .app
            .handle(http::Request::from_parts(parts.clone(), Bytes::new()))
            .await;
        if r.headers().contains_key(crate::api::error::NEEDS_BACKEND) {
            // A download whose checkout copy must be made first: the backend makes it.
            match forwarded(edge, &parts, &route, &query, body).await {
                Ok(r) => r,
                Err(e) => error(e, &method, &path),
            }
        } else {
            local(r)
        }
    } else {
        match forwarded(edge, &parts, &route, &query, body).await {
            Ok(r) => r,
            Err(e) => error(e, &method, &path),
        }
    };
    if method == Method::HEAD {
        *out.body_mut() = EdgeBody::Local(Body::empty());
    }
    cors::decorate(&edge.cfg.api.cors_origins, &parts.headers, out.headers_mut());
    if let Some(v) = id {
        out.headers_mut().entry(crate::api::REQUEST_ID).or_insert(v);
    }
    out
}

/// Everything the backend answers: refused here if the token fails, so that the
/// backend never sees a request that cannot be authorised.
async fn forwarded(
    edge: &Edge,
    parts: &http::request::Parts,
    route: &Route<'_>,
    query: &crate::api::params::Query,
    body: worker::Body,
) -> Result<Out, ApiError> {
    // The body is read even when the token fails: a client still sending it would see
    // its connection cut instead of the 401. Routes this build does not know (a newer
    // backend's) may send up to the largest body of any route.
    let limit = match route.spec() {
        Some(spec) => spec.body.limit(),
        None => crate::api::MAX_BODY,
    };
    let body = match parts.method {
        Method::GET | Method::HEAD | Method::OPTIONS => Bytes::new(),
        _ if limit == 0 => Bytes::new(),
        _ => read_body(body, limit).await?,
    };
    // The route table's rules, exactly as the backend applies them: nothing that fails
    // them is forwarded.
    match route.spec() {
        Some(spec) => {
            edge.app.admit(spec, &parts.headers, &body).await?;
        }
        None if crate::api::routes::requires_auth(&parts.method, parts.uri.path()) => {
            let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
            edge.app.auth.authenticate(header).await?;
        }
        None => {}
    }
    if *route == Route::Search {
        return search(edge, parts, body).await;
    }
    let resp = forward(edge, parts, body).await?;
    if resp.status().is_success() {
        if let Some((replica, prefix)) = policy::stale_listing(route, query) {
            if let Ok(r) = edge.app.replica(replica) {
                r.cache.docs.listings.invalidate(&prefix);
                r.main.forget_listing(&prefix).await;
            }
        }
    }
    Ok(resp)
}

#[event(fetch)]
async fn fetch(req: HttpRequest, env: Env, _ctx: Context) -> worker::Result<web_sys::Response> {
    let out = match edge(&env) {
        Ok(e) => handle(&e, req).await,
        Err(problem) => {
            worker::console_error!("dss edge: {problem}");
            error(
                ApiError::Misconfigured(format!("the edge worker is misconfigured: {problem}")),
                req.method(),
                req.uri().path(),
            )
        }
    };
    to_wasm(out)
}

/// Hand a response to the runtime: whole bodies as bytes (so they carry a
/// `Content-Length`, as the backend's do), streams as streams.
fn to_wasm(out: Out) -> worker::Result<web_sys::Response> {
    let (head, body) = out.into_parts();
    match body {
        EdgeBody::Local(Body::Full(b)) => {
            let headers = worker::Headers::new();
            for (k, v) in &head.headers {
                if let Ok(v) = v.to_str() {
                    headers.append(k.as_str(), v)?;
                }
            }
            let builder = worker::ResponseBuilder::new()
                .with_status(head.status.as_u16())
                .with_headers(headers);
            // Statuses such as 204 and 304 must not have a body at all.
            let resp = if b.is_empty() {
                builder.empty()
            } else {
                builder.fixed(b.to_vec())
            };
            Ok(resp.into())
        }
        other => worker::response_to_wasm(http::Response::from_parts(head, other)),
    }
}
