//! Search over bundle metadata.
//!
//! - [`document`]: the index document of a bundle or tombstone, exactly as the original
//!   DSS built it (`dss/index/es/document.py`);
//! - [`fields`]: how the original's mapping types each value (keywords, `.text`, dates);
//! - [`budget`]: the work one search may cause (nodes, tokens, expansions, bytes), charged
//!   from the request body through parsing to execution;
//! - [`dsl`]: the Elasticsearch query DSL parsed into a typed AST;
//! - [`eval`]: that AST evaluated over one document in memory (subscriptions, tests);
//! - [`indexer`]: which documents a bucket key stands for, read through the `Store` trait;
//! - [`schema`]: the original's optional scrubbing of undeclared properties (off by default);
//! - [`SearchEngine`]: the seam over the engines: embedded tantivy (`tantivy_engine`,
//!   native only) and Elasticsearch/OpenSearch over HTTP (`es`).

pub mod budget;
pub mod document;
pub mod dsl;
pub mod es;
pub mod eval;
pub mod fields;
pub mod indexer;
pub mod schema;
#[cfg(any(test, feature = "test-support"))]
pub mod synthetic;
#[cfg(not(target_arch = "wasm32"))]
pub mod tantivy_engine;

use serde_json::Value;

pub use crate::model::BoxFuture;

/// Search failures, each answered as the original did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The query is malformed or not supported (400 `elasticsearch_bad_request`).
    #[error("Invalid Elasticsearch query was received: {0}")]
    BadRequest(String),
    /// The engine cannot be reached (503 `service_unavailable`).
    #[error("search engine unavailable: {0}")]
    Unavailable(String),
    /// The search did not finish within its deadline (504 `timed_out`).
    #[error("{0}")]
    TimedOut(String),
    /// Anything else (500 `internal_server_error`).
    #[error("search engine error: {0}")]
    Internal(String),
}

impl From<dsl::DslError> for SearchError {
    fn from(e: dsl::DslError) -> Self {
        SearchError::BadRequest(e.0)
    }
}

impl From<budget::OverBudget> for SearchError {
    fn from(e: budget::OverBudget) -> Self {
        SearchError::BadRequest(e.to_string())
    }
}

/// How long one search may take by default, in seconds (`DSS_SEARCH_TIMEOUT`): far above
/// any query of the benchmark (milliseconds on 100,000 bundles), short enough that a
/// pathological one gives its thread back.
pub const DEFAULT_SEARCH_TIMEOUT_SECS: f64 = 10.0;

/// One page of a search, as `POST /v1/search` asks for it.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    /// `aws` or `gcp`: each replica has its own index.
    pub replica: &'a str,
    /// The `es_query` as the client sent it.
    pub es_query: &'a Value,
    /// Hits per page.
    pub per_page: usize,
    /// Resume after this hit: its sort values (`uuid`, `manifest.version`).
    pub search_after: Option<(String, String)>,
    /// Return each hit's document (`output_format=raw`).
    pub with_source: bool,
    /// The request's budget, as far as it has been charged (for its body).
    pub budget: budget::Budget,
}

/// One hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// `{uuid}.{version}`.
    pub id: String,
    /// The score; `None` because hits are sorted by id, as in the original (Elasticsearch
    /// reports no score when sorting by a field).
    pub score: Option<f64>,
    /// The sort values: `uuid`, `manifest.version`.
    pub sort: (String, String),
    /// The indexed document, when asked for.
    pub source: Option<Value>,
}

/// A page of hits, sorted by `uuid` then `manifest.version`, both descending.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// Every document the query matches (not only this page).
    pub total: u64,
    /// This page.
    pub hits: Vec<SearchHit>,
    /// The engine gave up early (Elasticsearch's `timed_out`): hits may be missing. The
    /// API says so in `X-DSS-Search-Partial`, and the edge never caches such an answer.
    pub partial: bool,
}

/// A change to an index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexOp {
    /// Put (or replace) the document with this `_id`.
    Put {
        /// `{uuid}.{version}`.
        id: String,
        /// The document.
        doc: Value,
    },
}

/// The search engine seam: the route and the indexing jobs use only this.
pub trait SearchEngine: crate::model::MaybeSend + crate::model::MaybeSync {
    /// Apply `ops` to `replica`'s index; visible to searches once this returns.
    /// Idempotent: putting an equal document again changes nothing.
    fn index<'a>(&'a self, replica: &'a str, ops: Vec<IndexOp>) -> BoxFuture<'a, Result<(), SearchError>>;

    /// Remove every document of `replica`'s index (before a full reindex).
    fn clear<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), SearchError>>;

    /// One page of hits.
    fn search<'a>(&'a self, req: SearchRequest<'a>) -> BoxFuture<'a, Result<SearchPage, SearchError>>;

    /// A short name for logs and `/internal/health` (`tantivy`, `elasticsearch`).
    fn name(&self) -> &'static str;
}

/// Split a `_id` into `uuid` and `version` (the sort values).
pub fn split_id(id: &str) -> (String, String) {
    match id.split_once('.') {
        Some((u, v)) => (u.to_string(), v.to_string()),
        None => (id.to_string(), String::new()),
    }
}
