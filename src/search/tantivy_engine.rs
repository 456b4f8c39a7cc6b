//! The embedded engine: one tantivy index on disk (`DATA_DIR/search/tantivy`) holding
//! both replicas' documents.
//!
//! Each document is flattened with the mapping's rules ([`super::fields`]) into terms of
//! one raw field `t`, each term prefixed with its type and path, so every query becomes
//! term, range and automaton lookups in one term dictionary:
//!
//! | term | meaning |
//! |---|---|
//! | `r{replica}` | the replica whose index holds it |
//! | `e{path}` | `exists` (every leaf path, its ancestors, `.text` of strings) |
//! | `k{path}\0{keyword}` | a normalized keyword (and `_id`) |
//! | `n{path}\0{hex}` / `d{path}\0{hex}` | a number / date, order-preserving hex of its bits |
//! | `b{path}\0true` | a boolean |
//!
//! The `.text` sub-fields go to field `x` as tokens `{path}\0{token}` with positions, for
//! `match` and `match_phrase`. Field `key` (`{replica}/{uuid}.{version}`, indexed and fast)
//! identifies a document for replacement and is the sort order: by `_id` descending,
//! which is `uuid` then `manifest.version` descending as in the original. The document
//! itself is stored for `output_format=raw`.
//!
//! Searches run off the async workers, on at most [`search_slots`] blocking threads at a
//! time, each within a deadline ([`TantivyEngine::with_timeout`], `DSS_SEARCH_TIMEOUT`).
//! Past it the request is answered 504 `timed_out`. What the deadline bounds exactly:
//!
//! - the wait for a free search slot, and the request's answer: at the deadline the
//!   request gets its 504 whatever the search thread is doing;
//! - the search thread's own work at its checkpoints: before the query is built, before
//!   each index segment is collected, before each stored document is read. Tantivy cannot
//!   interrupt the collection of one segment, so a thread may finish the segment it is in
//!   after the deadline; it keeps its slot until then, so abandoned searches can never
//!   pile up more threads than there are slots.

use super::dsl::{self, Operator, Query, Scalar, SearchBody};
use super::eval::{map_bound, Candidates};
use super::fields::{self, Leaf, TEXT_SUFFIX};
use super::{BoxFuture, IndexOp, SearchEngine, SearchError, SearchHit, SearchPage, SearchRequest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, InvertedIndexRangeQuery, Occur, PhraseQuery, Query as TQuery, RegexQuery,
    TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value as _, FAST, STORED, STRING,
};
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// Memory the index writer may use before it flushes a segment (split over its threads).
const WRITER_HEAP: usize = 128 * 1024 * 1024;
/// Indexing threads (the machine this was tuned on has two cores).
const WRITER_THREADS: usize = 2;

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    t: Field,
    x: Field,
    src: Field,
}

struct Inner {
    index: Index,
    dir: std::path::PathBuf,
    fields: Fields,
    /// Held while writing: one batch at a time in this process.
    writing: Mutex<()>,
    reader: IndexReader,
}

/// The embedded tantivy engine.
#[derive(Clone)]
pub struct TantivyEngine {
    inner: Arc<Inner>,
    /// How long one search may take, from the moment it is asked for.
    timeout: Duration,
    /// One permit per search thread: searches wait here (asynchronously) for a thread.
    slots: Arc<tokio::sync::Semaphore>,
}

/// How many searches run at once: one per core, since a search is CPU work and more
/// threads would only share the same cores (the rest wait, within their deadline).
pub fn search_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// One search, owned, for its blocking thread.
struct Job {
    replica: String,
    body: SearchBody,
    per_page: usize,
    search_after: Option<(String, String)>,
    with_source: bool,
}

fn timed_out(timeout: Duration) -> SearchError {
    SearchError::TimedOut(format!(
        "the search did not finish within {} s (DSS_SEARCH_TIMEOUT)",
        timeout.as_secs_f64()
    ))
}

/// A collector that refuses to start another segment past the deadline.
struct Deadline<C> {
    inner: C,
    deadline: Instant,
}

/// The error a [`Deadline`] collector stops a search with; told apart by the clock.
fn past(deadline: Instant) -> tantivy::Result<()> {
    if Instant::now() >= deadline {
        return Err(tantivy::TantivyError::InternalError("search deadline passed".into()));
    }
    Ok(())
}

impl<C: Collector> Collector for Deadline<C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn check_schema(&self, schema: &Schema) -> tantivy::Result<()> {
        self.inner.check_schema(schema)
    }

    fn for_segment(&self, ord: tantivy::SegmentOrdinal, reader: &tantivy::SegmentReader) -> tantivy::Result<C::Child> {
        past(self.deadline)?;
        self.inner.for_segment(ord, reader)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(&self, fruits: Vec<<C::Child as SegmentCollector>::Fruit>) -> tantivy::Result<C::Fruit> {
        self.inner.merge_fruits(fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        ord: u32,
        reader: &tantivy::SegmentReader,
    ) -> tantivy::Result<<C::Child as SegmentCollector>::Fruit> {
        past(self.deadline)?;
        self.inner.collect_segment(weight, ord, reader)
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let key = b.add_text_field("key", STRING | FAST);
    let t = b.add_text_field("t", STRING);
    let x = b.add_text_field(
        "x",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    let src = b.add_bytes_field("src", STORED);
    (b.build(), Fields { key, t, x, src })
}

fn internal(e: impl std::fmt::Display) -> SearchError {
    SearchError::Internal(e.to_string())
}

impl TantivyEngine {
    /// Open the index in `dir`, creating it if absent. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir).map_err(|e| internal(format!("{}: {e}", dir.display())))?;
        let (schema, fields) = schema();
        let index = if dir.join("meta.json").exists() {
            let index = Index::open_in_dir(dir).map_err(internal)?;
            if index.schema() != schema {
                return Err(SearchError::Internal(format!(
                    "the search index in {} was made by another version; remove it and run `dss reindex`",
                    dir.display()
                )));
            }
            index
        } else {
            Index::create_in_dir(dir, schema).map_err(internal)?
        };
        // Reloaded after our own commits at once, and after another process's (`dss
        // reindex` beside a running server) when it notices the change.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(internal)?;
        Ok(TantivyEngine {
            inner: Arc::new(Inner {
                index,
                dir: dir.to_path_buf(),
                fields,
                writing: Mutex::new(()),
                reader,
            }),
            timeout: Duration::from_secs_f64(super::DEFAULT_SEARCH_TIMEOUT_SECS),
            slots: Arc::new(tokio::sync::Semaphore::new(search_slots())),
        })
    }

    /// This engine with searches bounded by `timeout` (from the request's start; zero
    /// answers every search 504, which tests use).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A writer for one batch. The index's lock file keeps writers of other processes
    /// out; one that holds it is waited for, a little.
    fn writer(&self) -> Result<IndexWriter, SearchError> {
        let mut wait = std::time::Duration::from_millis(20);
        for _ in 0..12 {
            match self.inner.index.writer_with_num_threads(WRITER_THREADS, WRITER_HEAP) {
                Ok(w) => return Ok(w),
                Err(tantivy::TantivyError::LockFailure(..)) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_secs(1));
                }
                Err(e) => return Err(internal(e)),
            }
        }
        Err(SearchError::Unavailable(format!(
            "the search index in {} is being written by another process",
            self.inner.dir.display()
        )))
    }

    /// The number of documents in the index, both replicas.
    pub fn num_docs(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }

    /// Bytes the index takes on disk.
    pub fn disk_usage(&self) -> u64 {
        let searcher = self.inner.reader.searcher();
        searcher
            .space_usage()
            .map(|s| s.total().get_bytes())
            .unwrap_or_default()
    }

    fn apply(&self, replica: &str, ops: Vec<IndexOp>) -> Result<(), SearchError> {
        let f = self.inner.fields;
        let _one = self.inner.writing.lock().unwrap_or_else(|e| e.into_inner());
        let writer = self.writer()?;
        // Documents are built on two threads and handed to the writer as they are made,
        // so building overlaps with tantivy's own indexing threads.
        let half = ops.len().div_ceil(2).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = ops
                .chunks(half)
                .map(|chunk| {
                    let writer = &writer;
                    scope.spawn(move || -> Result<(), SearchError> {
                        for op in chunk {
                            let IndexOp::Put { id, doc } = op;
                            let key = format!("{replica}/{id}");
                            let d = to_tantivy(f, replica, id, doc)?;
                            // Replacing by key makes indexing the same version again harmless.
                            writer.delete_term(Term::from_field_text(f.key, &key));
                            writer.add_document(d).map_err(internal)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| internal("indexing thread panicked"))?)
        })?;
        let mut writer = writer;
        writer.commit().map_err(internal)?;
        writer.wait_merging_threads().map_err(internal)?;
        self.inner.reader.reload().map_err(internal)
    }

    fn clear_now(&self, replica: &str) -> Result<(), SearchError> {
        let _one = self.inner.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut writer = self.writer()?;
        writer.delete_term(Term::from_field_text(self.inner.fields.t, &format!("r{replica}")));
        writer.commit().map_err(internal)?;
        writer.wait_merging_threads().map_err(internal)?;
        self.inner.reader.reload().map_err(internal)
    }

    /// Run one search on this (blocking) thread, checking `deadline` between its steps.
    fn run(&self, mut job: Job, deadline: Instant) -> Result<SearchPage, SearchError> {
        let f = self.inner.fields;
        let late = |e: tantivy::TantivyError| {
            if Instant::now() >= deadline {
                timed_out(self.timeout)
            } else {
                internal(e)
            }
        };
        past(deadline).map_err(late)?;
        let query = translate(f, &mut job.body)?;
        let scoped: Box<dyn TQuery> = Box::new(BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.t, &format!("r{}", job.replica)),
                    IndexRecordOption::Basic,
                )),
            ),
            (Occur::Must, query),
        ]));
        let searcher = self.inner.reader.searcher();
        let top = TopDocs::with_limit(job.per_page.max(1)).order_by_string_fast_field("key", Order::Desc);
        let bounded = |inner| Deadline { inner, deadline };
        let (total, hits) = match &job.search_after {
            None => searcher.search(&scoped, &bounded((Count, top))).map_err(late)?,
            Some((uuid, version)) => {
                let total = searcher
                    .search(&scoped, &Deadline { inner: Count, deadline })
                    .map_err(late)?;
                let after = InvertedIndexRangeQuery::new(
                    Bound::Unbounded,
                    Bound::Excluded(Term::from_field_text(
                        f.key,
                        &format!("{}/{uuid}.{version}", job.replica),
                    )),
                );
                let paged = BooleanQuery::new(vec![(Occur::Must, scoped), (Occur::Must, Box::new(after))]);
                let hits = searcher
                    .search(&paged, &Deadline { inner: top, deadline })
                    .map_err(late)?;
                (total, hits)
            }
        };
        let prefix = format!("{}/", job.replica);
        let mut out = Vec::with_capacity(hits.len());
        for (key, addr) in hits {
            let Some(id) = key.as_deref().and_then(|k| k.strip_prefix(&prefix)) else {
                continue;
            };
            let source = if job.with_source {
                past(deadline).map_err(late)?;
                let doc: TantivyDocument = searcher.doc(addr).map_err(internal)?;
                let bytes = doc.get_first(f.src).and_then(|v| v.as_bytes()).unwrap_or(b"null");
                Some(serde_json::from_slice(bytes).map_err(internal)?)
            } else {
                None
            };
            out.push(SearchHit {
                id: id.to_string(),
                score: None,
                sort: super::split_id(id),
                source,
            });
        }
        Ok(SearchPage {
            total: total as u64,
            hits: out,
            partial: false,
        })
    }

    /// One search: parsed here (bounded by its budget, so a refused query never takes a
    /// slot), then run on a blocking thread once a slot is free, all within the timeout.
    async fn search_bounded(&self, req: SearchRequest<'_>) -> Result<SearchPage, SearchError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let body = dsl::parse_body_within(req.es_query, req.budget)?;
        let job = Job {
            replica: req.replica.to_string(),
            body,
            per_page: req.per_page,
            search_after: req.search_after,
            with_source: req.with_source,
        };
        let permit = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => return Err(internal(closed)),
            Err(_) => return Err(timed_out(self.timeout)),
        };
        let engine = self.clone();
        let std_deadline = deadline.into_std();
        let task = tokio::task::spawn_blocking(move || {
            // Held until the work ends, even when nobody waits for it any more.
            let _permit = permit;
            engine.run(job, std_deadline)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(page)) => page,
            Ok(Err(join)) => Err(internal(join)),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }
}

/// The tantivy query of a parsed search, its clauses charged to the search's budget first
/// (as the evaluator charges them), so the query built is no larger than was charged.
fn translate(f: Fields, body: &mut SearchBody) -> Result<Box<dyn TQuery>, SearchError> {
    body.budget.clauses(&body.query).map_err(SearchError::from)?;
    Ok(Builder { f }.build(&body.query))
}

/// Order-preserving hex of a number's bits.
fn enc_f64(n: f64) -> String {
    format!("{:016x}", tantivy::f64_to_u64(n + 0.0))
}

fn enc_i64(n: i64) -> String {
    format!("{:016x}", tantivy::i64_to_u64(n))
}

/// The tantivy document of index document `doc` with `_id` `id`.
fn to_tantivy(f: Fields, replica: &str, id: &str, doc: &Value) -> Result<TantivyDocument, SearchError> {
    let mut terms: BTreeSet<String> = BTreeSet::new();
    terms.insert(format!("r{replica}"));
    terms.insert(format!("k_id\0{id}"));
    terms.insert("e_id".into());
    let mut tokens = Vec::new();
    let mut pos = 0usize;
    let leaves: Vec<(String, Leaf<'_>)> = fields::flatten(doc)
        .into_iter()
        .filter_map(|(p, v)| fields::classify(&p, v).map(|l| (p, l)))
        .collect();
    for (path, leaf) in &leaves {
        match leaf {
            Leaf::Str { keyword, text } => {
                if let Some(k) = keyword {
                    terms.insert(format!("k{path}\0{k}"));
                }
                if let Some(t) = text {
                    for tok in fields::analyze(t) {
                        tokens.push(Token {
                            offset_from: 0,
                            offset_to: 0,
                            position: pos,
                            text: format!("{path}\0{tok}"),
                            position_length: 1,
                        });
                        pos += 1;
                    }
                    pos += fields::POSITION_GAP;
                }
            }
            Leaf::Number(n) => {
                terms.insert(format!("n{path}\0{}", enc_f64(*n)));
            }
            Leaf::Date(d) => {
                terms.insert(format!("d{path}\0{}", enc_i64(*d)));
            }
            Leaf::Bool(b) => {
                terms.insert(format!("b{path}\0{b}"));
            }
        }
    }
    for p in fields::exists_paths(leaves.iter().map(|(p, l)| (p.as_str(), l))) {
        terms.insert(format!("e{p}"));
    }
    let mut d = TantivyDocument::new();
    d.add_text(f.key, format!("{replica}/{id}"));
    for t in terms {
        d.add_text(f.t, t);
    }
    if !tokens.is_empty() {
        d.add_pre_tokenized_text(
            f.x,
            PreTokenizedString {
                text: String::new(),
                tokens,
            },
        );
    }
    d.add_bytes(f.src, &serde_json::to_vec(doc).map_err(internal)?);
    Ok(d)
}

/// Lowers the AST to tantivy queries over the fields above.
struct Builder {
    f: Fields,
}

fn boxed(q: impl TQuery) -> Box<dyn TQuery> {
    Box::new(q)
}

fn union(qs: Vec<Box<dyn TQuery>>) -> Box<dyn TQuery> {
    match qs.len() {
        0 => boxed(EmptyQuery),
        1 => qs.into_iter().next().unwrap_or_else(|| boxed(EmptyQuery)),
        _ => boxed(BooleanQuery::union(qs)),
    }
}

/// Escape regex meta characters (as `regex_syntax::escape` would).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\x00");
        } else {
            out.push(c);
        }
    }
    out
}

fn wildcard_regex(pattern: &str) -> String {
    let mut out = String::new();
    for c in pattern.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex_escape(&c.to_string())),
        }
    }
    out
}

impl Builder {
    fn term(&self, field: Field, text: &str) -> Box<dyn TQuery> {
        boxed(TermQuery::new(
            Term::from_field_text(field, text),
            IndexRecordOption::Basic,
        ))
    }

    /// Terms in `[lower, upper]` of field `t` under `prefix` (`n{path}\0`), bounds already encoded.
    fn range(&self, field: Field, prefix: &str, lower: Bound<String>, upper: Bound<String>) -> Box<dyn TQuery> {
        let text = |s: &str| Term::from_field_text(field, &format!("{prefix}{s}"));
        let lo = match lower {
            Bound::Included(s) => Bound::Included(text(&s)),
            Bound::Excluded(s) => Bound::Excluded(text(&s)),
            Bound::Unbounded => Bound::Included(text("")),
        };
        // 0xFF never occurs in UTF-8, so it sorts after every term under the prefix.
        let hi = match upper {
            Bound::Included(s) => Bound::Included(text(&s)),
            Bound::Excluded(s) => Bound::Excluded(text(&s)),
            Bound::Unbounded => Bound::Excluded(Term::from_field_bytes(field, &[prefix.as_bytes(), &[0xFF]].concat())),
        };
        boxed(InvertedIndexRangeQuery::new(lo, hi))
    }

    fn prefix_of(&self, field: Field, prefix: &str) -> Box<dyn TQuery> {
        boxed(InvertedIndexRangeQuery::new(
            Bound::Included(Term::from_field_text(field, prefix)),
            Bound::Excluded(Term::from_field_bytes(field, &[prefix.as_bytes(), &[0xFF]].concat())),
        ))
    }

    fn regex(&self, field: Field, pattern: &str) -> Box<dyn TQuery> {
        match RegexQuery::from_pattern(pattern, field) {
            Ok(q) => boxed(q),
            Err(e) => {
                // Patterns are escaped, so this is a size limit: nothing can match it.
                tracing::debug!("wildcard pattern not compiled: {e}");
                boxed(EmptyQuery)
            }
        }
    }

    /// `v` under every type it can be read as, at `field` (not `.text`).
    fn exact(&self, field: &str, v: &Scalar) -> Vec<Box<dyn TQuery>> {
        let c = Candidates::of(field, v);
        let t = self.f.t;
        let mut out = Vec::new();
        if let Some(k) = c.keyword {
            out.push(self.term(t, &format!("k{field}\0{k}")));
        }
        if field != "_id" {
            if let Some(n) = c.number {
                out.push(self.term(t, &format!("n{field}\0{}", enc_f64(n))));
            }
            if let Some(d) = c.date {
                out.push(self.term(t, &format!("d{field}\0{}", enc_i64(d))));
            }
            if let Some(b) = c.boolean {
                out.push(self.term(t, &format!("b{field}\0{b}")));
            }
        }
        out
    }

    fn text_base(field: &str) -> Option<&str> {
        field.strip_suffix(TEXT_SUFFIX)
    }

    /// `term`: the value under each type it can be read as, or a token of a `.text` field.
    fn term_of(&self, field: &str, value: &Scalar) -> Box<dyn TQuery> {
        let mut qs = self.exact(field, value);
        if let Some(base) = Self::text_base(field) {
            qs.push(self.term(self.f.x, &format!("{base}\0{}", value.as_text())));
        }
        union(qs)
    }

    fn build(&self, q: &Query) -> Box<dyn TQuery> {
        let (t, x) = (self.f.t, self.f.x);
        match q {
            Query::MatchAll => boxed(AllQuery),
            Query::MatchNone => boxed(EmptyQuery),
            Query::Bool {
                must,
                should,
                must_not,
                filter,
                minimum_should_match,
            } => {
                let need = Query::required_should(must.len(), filter.len(), should.len(), *minimum_should_match);
                if need > should.len() {
                    return boxed(EmptyQuery);
                }
                let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
                for c in must.iter().chain(filter) {
                    clauses.push((Occur::Must, self.build(c)));
                }
                // A bool with no required clause matches everything that is not excluded.
                if clauses.is_empty() && need == 0 {
                    clauses.push((Occur::Must, boxed(AllQuery)));
                }
                for c in should {
                    clauses.push((Occur::Should, self.build(c)));
                }
                for c in must_not {
                    clauses.push((Occur::MustNot, self.build(c)));
                }
                boxed(BooleanQuery::with_minimum_required_clauses(clauses, need))
            }
            Query::Term { field, value } => self.term_of(field, value),
            Query::Terms { field, values } => union(values.iter().map(|v| self.term_of(field, v)).collect()),
            Query::Match {
                field,
                query,
                operator,
                tokens,
            } => {
                let mut qs = self.exact(field, query);
                if let Some(base) = Self::text_base(field) {
                    let toks: Vec<Box<dyn TQuery>> = tokens
                        .iter()
                        .map(|tok| self.term(x, &format!("{base}\0{tok}")))
                        .collect();
                    if !toks.is_empty() {
                        qs.push(match operator {
                            Operator::Or => union(toks),
                            Operator::And => boxed(BooleanQuery::intersection(toks)),
                        });
                    }
                }
                union(qs)
            }
            Query::MatchPhrase { field, query, tokens } => {
                let mut qs = self.exact(field, query);
                if let Some(base) = Self::text_base(field) {
                    let terms: Vec<Term> = tokens
                        .iter()
                        .map(|tok| Term::from_field_text(x, &format!("{base}\0{tok}")))
                        .collect();
                    match terms.len() {
                        0 => {}
                        1 => qs.push(boxed(TermQuery::new(terms[0].clone(), IndexRecordOption::Basic))),
                        _ => qs.push(boxed(PhraseQuery::new(terms))),
                    }
                }
                union(qs)
            }
            Query::Range { field, lower, upper } => {
                let mut qs = Vec::new();
                let nb = |s: &Scalar| Candidates::of(field, s).number.map(enc_f64);
                if let (Some(lo), Some(hi)) = (map_bound(lower, nb), map_bound(upper, nb)) {
                    qs.push(self.range(t, &format!("n{field}\0"), lo, hi));
                }
                let db = |s: &Scalar| Candidates::of(field, s).date.map(enc_i64);
                if let (Some(lo), Some(hi)) = (map_bound(lower, db), map_bound(upper, db)) {
                    qs.push(self.range(t, &format!("d{field}\0"), lo, hi));
                }
                let kb = |s: &Scalar| Some(fields::normalize(field, &s.as_text()));
                if let (Some(lo), Some(hi)) = (map_bound(lower, kb), map_bound(upper, kb)) {
                    qs.push(self.range(t, &format!("k{field}\0"), lo, hi));
                }
                union(qs)
            }
            Query::Exists { field } => self.term(t, &format!("e{field}")),
            Query::Prefix { field, value } => {
                let mut qs = vec![self.prefix_of(t, &format!("k{field}\0{}", fields::normalize(field, value)))];
                if let Some(base) = Self::text_base(field) {
                    qs.push(self.prefix_of(x, &format!("{base}\0{}", value.to_lowercase())));
                }
                union(qs)
            }
            Query::Wildcard { field, pattern } => {
                let mut qs = vec![self.regex(
                    t,
                    &format!(
                        "k{}\\x00{}",
                        regex_escape(field),
                        wildcard_regex(&fields::normalize(field, pattern))
                    ),
                )];
                if let Some(base) = Self::text_base(field) {
                    qs.push(self.regex(
                        x,
                        &format!("{}\\x00{}", regex_escape(base), wildcard_regex(&pattern.to_lowercase())),
                    ));
                }
                union(qs)
            }
            Query::Ids { values } => union(values.iter().map(|v| self.term(t, &format!("k_id\0{v}"))).collect()),
        }
    }
}

impl SearchEngine for TantivyEngine {
    fn index<'a>(&'a self, replica: &'a str, ops: Vec<IndexOp>) -> BoxFuture<'a, Result<(), SearchError>> {
        let engine = self.clone();
        let replica = replica.to_string();
        Box::pin(async move {
            // Commits sync files to disk: keep them off the async workers.
            tokio::task::spawn_blocking(move || engine.apply(&replica, ops))
                .await
                .map_err(internal)?
        })
    }

    fn clear<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), SearchError>> {
        let engine = self.clone();
        let replica = replica.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || engine.clear_now(&replica))
                .await
                .map_err(internal)?
        })
    }

    fn search<'a>(&'a self, req: SearchRequest<'a>) -> BoxFuture<'a, Result<SearchPage, SearchError>> {
        Box::pin(self.search_bounded(req))
    }

    fn name(&self) -> &'static str {
        "tantivy"
    }
}

impl std::fmt::Debug for TantivyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyEngine")
            .field("index", &self.inner.index.directory())
            .finish()
    }
}
