//! Optional (`DSS_INDEX_SCHEMA_SCRUB=on`; off by default): the original's
//! `scrub_index_data` (`dss/index/es/validator.py`). Each metadata file's JSON schema is
//! fetched from its `describedBy` (or the legacy `core.schema_url`), and properties the
//! schema does not allow (`additionalProperties: false`) are removed before indexing. As in
//! the original, a file with no schema reference, or whose schema cannot be fetched, is left
//! out of the document. Off by default so that indexing never depends on a schema server.
//!
//! The subset of JSON Schema followed: `$ref` (relative URLs and `#/` pointers),
//! `properties`, `additionalProperties: false`, `items`; schemas are cached by URL.
//!
//! The URLs come from uploaded metadata, so they are fetched only from the hosts the
//! operator listed ([`SchemaHosts`], `DSS_INDEX_SCHEMA_HOSTS`; by default the HCA schema
//! host, over https): a `describedBy` of `http://169.254.169.254/…` or of a service on the
//! server's own network is never requested. Answers are read up to [`MAX_SCHEMA_BYTES`],
//! redirects are not followed (the HTTP client's policy), and the cache is bounded by bytes.

use super::BoxFuture;
use crate::http::HttpClient;
use serde_json::Value;
use std::sync::Arc;

/// Deepest `$ref`/property nesting followed.
const MAX_DEPTH: usize = 32;
/// Largest schema document accepted (the HCA schemas are a few KiB each).
pub const MAX_SCHEMA_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of schema documents kept in the cache (as fetched; parsed, they take a few
/// times more). Hundreds of HCA schemas fit.
pub const SCHEMA_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The hosts schemas may come from unless configured: the HCA metadata schemas.
pub const DEFAULT_SCHEMA_HOSTS: &str = "schema.humancellatlas.org";

/// The origins (scheme, host, port) schema URLs may point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaHosts(Vec<(String, String, u16)>);

impl SchemaHosts {
    /// Parse a comma-separated list: `host` or `host:port` (https), or
    /// `http(s)://host[:port]` (the scheme as given: plain http only when written).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let with_scheme = if entry.contains("://") {
                entry.to_string()
            } else {
                format!("https://{entry}")
            };
            let url = url::Url::parse(&with_scheme).map_err(|e| format!("{entry}: {e}"))?;
            let origin = Self::origin(&url).ok_or_else(|| format!("{entry}: not an http(s) host"))?;
            if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
                return Err(format!("{entry}: a host, not a URL with a path"));
            }
            out.push(origin);
        }
        Ok(SchemaHosts(out))
    }

    fn origin(url: &url::Url) -> Option<(String, String, u16)> {
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        Some((
            url.scheme().to_string(),
            url.host_str()?.to_ascii_lowercase(),
            url.port_or_known_default()?,
        ))
    }

    /// Whether `url` may be fetched: its scheme, host and port are listed (and it carries
    /// no credentials).
    pub fn allows(&self, url: &url::Url) -> bool {
        Self::origin(url).is_some_and(|o| self.0.contains(&o))
    }
}

/// A cached schema and the bytes it was fetched as (its weight in the cache).
#[derive(Clone)]
struct CachedSchema {
    doc: Arc<Value>,
    bytes: u64,
}

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<String, CachedSchema> for ByBytes {
    fn weight(&self, key: &String, v: &CachedSchema) -> u64 {
        (key.len() as u64).saturating_add(v.bytes).max(1)
    }
}

/// Fetches schemas (cached) and scrubs metadata files with them.
pub struct SchemaScrubber<H> {
    http: H,
    hosts: SchemaHosts,
    cache: quick_cache::sync::Cache<String, CachedSchema, ByBytes>,
}

/// A schema node with the document it came from (for `#/` pointers) and its URL.
#[derive(Clone)]
struct Node {
    doc: Arc<Value>,
    url: String,
    pointer: String,
}

impl Node {
    fn value(&self) -> Option<&Value> {
        self.doc.pointer(&self.pointer)
    }
    fn child(&self, path: &[&str]) -> Node {
        let mut pointer = self.pointer.clone();
        for p in path {
            pointer.push('/');
            pointer.push_str(&p.replace('~', "~0").replace('/', "~1"));
        }
        Node {
            doc: self.doc.clone(),
            url: self.url.clone(),
            pointer,
        }
    }
}

impl<H: HttpClient> SchemaScrubber<H> {
    /// A scrubber fetching schemas with `http`, from `hosts` only.
    pub fn new(http: H, hosts: SchemaHosts) -> Self {
        SchemaScrubber {
            http,
            hosts,
            // Estimated items: the cache's bytes over a typical schema of 8 KiB.
            cache: quick_cache::sync::Cache::with_weighter(
                (SCHEMA_CACHE_BYTES / 8192) as usize,
                SCHEMA_CACHE_BYTES,
                ByBytes,
            ),
        }
    }

    async fn fetch(&self, url: &str) -> Option<Arc<Value>> {
        if let Some(v) = self.cache.get(url) {
            return Some(v.doc);
        }
        let parsed = url::Url::parse(url).ok()?;
        if !self.hosts.allows(&parsed) {
            // The URL came from uploaded metadata: log it, never request it.
            tracing::warn!(url, "schema not fetched: its host is not in DSS_INDEX_SCHEMA_HOSTS");
            return None;
        }
        let req = http::Request::get(parsed.as_str()).body(bytes::Bytes::new()).ok()?;
        let resp = match self.http.send_limited(req, MAX_SCHEMA_BYTES).await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(url, status = r.status().as_u16(), "schema not fetched");
                return None;
            }
            Err(e) => {
                tracing::warn!(url, "schema not fetched: {e}");
                return None;
            }
        };
        let v: Value = match serde_json::from_slice(resp.body()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(url, "schema is not JSON: {e}");
                return None;
            }
        };
        let doc = Arc::new(v);
        // Failures are not cached: the next bundle tries again.
        self.cache.insert(
            url.to_string(),
            CachedSchema {
                doc: doc.clone(),
                bytes: resp.body().len() as u64,
            },
        );
        Some(doc)
    }

    /// Follow `$ref`s from `node` to a schema that is not a reference.
    async fn resolve(&self, mut node: Node) -> Option<Node> {
        for _ in 0..MAX_DEPTH {
            let Some(r) = node.value().and_then(|v| v.get("$ref")).and_then(Value::as_str) else {
                return Some(node);
            };
            let r = r.to_string();
            let (target, fragment) = match r.split_once('#') {
                Some((t, f)) => (t.to_string(), f.to_string()),
                None => (r.clone(), String::new()),
            };
            node = if target.is_empty() {
                Node {
                    pointer: fragment,
                    ..node
                }
            } else {
                let url = url::Url::parse(&node.url).ok()?.join(&target).ok()?.to_string();
                Node {
                    doc: self.fetch(&url).await?,
                    url,
                    pointer: fragment,
                }
            };
        }
        None
    }

    /// The files to index: each scrubbed by its schema; files without one are left out.
    pub async fn scrub_files(&self, files: Vec<(String, Value)>) -> Vec<(String, Value)> {
        let mut out = Vec::with_capacity(files.len());
        for (name, mut v) in files {
            let reference = v
                .get("describedBy")
                .and_then(Value::as_str)
                .or_else(|| v.get("core").and_then(|c| c.get("schema_url")).and_then(Value::as_str))
                .map(str::to_string);
            let Some(url) = reference else {
                tracing::warn!(file = %name, "no schema reference: left out of the index (schema scrubbing is on)");
                continue;
            };
            let Some(doc) = self.fetch(&url).await else {
                tracing::warn!(file = %name, %url, "schema unavailable: left out of the index");
                continue;
            };
            let root = Node {
                doc,
                url,
                pointer: String::new(),
            };
            self.scrub(&mut v, root, 0).await;
            out.push((name, v));
        }
        out
    }

    fn scrub<'a>(&'a self, v: &'a mut Value, node: Node, depth: usize) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if depth >= MAX_DEPTH {
                return;
            }
            let Some(node) = self.resolve(node).await else {
                return;
            };
            let Some(schema) = node.value().cloned() else {
                return;
            };
            match v {
                Value::Object(obj) => {
                    let props = schema.get("properties").and_then(Value::as_object);
                    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                        obj.retain(|k, _| props.is_some_and(|p| p.contains_key(k)));
                    }
                    if props.is_some() {
                        for (k, child) in obj.iter_mut() {
                            if props.is_some_and(|p| p.contains_key(k)) {
                                self.scrub(child, node.child(&["properties", k]), depth + 1).await;
                            }
                        }
                    }
                }
                Value::Array(items) if schema.get("items").is_some_and(Value::is_object) => {
                    for item in items.iter_mut() {
                        self.scrub(item, node.child(&["items"]), depth + 1).await;
                    }
                }
                _ => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use bytes::Bytes;
    use serde_json::json;
    use std::sync::Mutex;

    /// Answers every URL with one schema (whose `$ref` may point elsewhere) and records
    /// every URL it is asked for, by any method of the trait.
    #[derive(Default)]
    struct Recorder {
        urls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn answer(&self, req: &http::Request<Bytes>) -> http::Response<Bytes> {
            self.urls.lock().unwrap().push(req.uri().to_string());
            let schema = if req.uri().path().ends_with("/refers") {
                json!({"$ref": "http://169.254.169.254/latest/meta-data/"})
            } else {
                json!({"type": "object", "additionalProperties": false, "properties": {"describedBy": {}, "a": {}}})
            };
            http::Response::new(Bytes::from(schema.to_string()))
        }
    }

    impl HttpClient for &Recorder {
        async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
            Ok(self.answer(&req))
        }

        async fn send_limited(&self, req: http::Request<Bytes>, _: usize) -> Result<http::Response<Bytes>, HttpError> {
            Ok(self.answer(&req))
        }

        async fn send_stream(
            &self,
            req: http::Request<crate::http::ReqBody>,
        ) -> Result<http::Response<crate::model::platform::ByteStream>, HttpError> {
            self.urls.lock().unwrap().push(req.uri().to_string());
            Err(HttpError::Transport("not used".into()))
        }
    }

    #[tokio::test]
    async fn schemas_are_fetched_only_from_the_listed_hosts() {
        let http = Recorder::default();
        let hosts = SchemaHosts::parse(DEFAULT_SCHEMA_HOSTS).unwrap();
        let scrubber = SchemaScrubber::new(&http, hosts);
        let good = "https://schema.humancellatlas.org/type/biomaterial/5.2.1/donor_organism";
        let file = |url: &str| json!({"describedBy": url, "a": 1, "b": 2});
        let files = vec![
            ("good.json".to_string(), file(good)),
            (
                "metadata.json".into(),
                file("http://169.254.169.254/latest/meta-data/iam"),
            ),
            ("loopback.json".into(), file("http://127.0.0.1:8080/admin")),
            (
                "plain-http.json".into(),
                file("http://schema.humancellatlas.org/type/x"),
            ),
            (
                "other-port.json".into(),
                file("https://schema.humancellatlas.org:8443/type/x"),
            ),
            (
                "credentials.json".into(),
                file("https://u:p@schema.humancellatlas.org/type/x"),
            ),
            (
                "lookalike.json".into(),
                file("https://schema.humancellatlas.org.evil.example/x"),
            ),
            (
                "legacy.json".into(),
                json!({"core": {"schema_url": "http://[::1]/x"}, "a": 1}),
            ),
            // An allowed schema whose `$ref` points to a host that is not.
            (
                "refers.json".into(),
                file("https://schema.humancellatlas.org/type/refers"),
            ),
        ];
        let kept = scrubber.scrub_files(files).await;
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["good.json", "refers.json"]);
        assert_eq!(
            kept[0].1,
            json!({"describedBy": good, "a": 1}),
            "scrubbed by its schema"
        );
        assert_eq!(
            *http.urls.lock().unwrap(),
            [good, "https://schema.humancellatlas.org/type/refers"],
            "nothing else was requested"
        );
        // Cached: a second bundle fetches nothing.
        scrubber.scrub_files(vec![("again.json".into(), file(good))]).await;
        assert_eq!(http.urls.lock().unwrap().len(), 2);
    }

    #[test]
    fn schema_hosts_are_origins() {
        let h = SchemaHosts::parse(" schema.example.org , http://127.0.0.1:9000,https://x.example:8443 ").unwrap();
        let ok = |u: &str| h.allows(&url::Url::parse(u).unwrap());
        assert!(ok("https://schema.example.org/a/b"));
        assert!(ok("https://SCHEMA.example.org:443/a"));
        assert!(!ok("http://schema.example.org/a"), "https unless http is listed");
        assert!(ok("http://127.0.0.1:9000/s"));
        assert!(!ok("http://127.0.0.1:9001/s"));
        assert!(!ok("https://127.0.0.1:9000/s"));
        assert!(ok("https://x.example:8443/s"));
        assert!(!ok("https://x.example/s"));
        assert!(!ok("file:///etc/passwd"));
        assert_eq!(SchemaHosts::parse("").unwrap(), SchemaHosts(vec![]));
        for bad in [
            "https://x.example/path",
            "ftp://x.example",
            "http://u:p@x.example",
            "exa mple",
        ] {
            assert!(SchemaHosts::parse(bad).is_err(), "{bad}");
        }
    }
}
