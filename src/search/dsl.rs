//! The Elasticsearch query DSL, parsed into a typed AST. The subset covers what portals
//! and the original's tests send; anything else is refused with an error that names it.
//!
//! `multi_match`, `query_string` and `constant_score` are lowered to the core queries here,
//! so engines implement only [`Query`]'s variants. The values of `match` and `match_phrase`
//! on `.text` fields are analysed here too, once, so engines never split query text.
//!
//! Parsing charges a [`Budget`] (nodes, tokens, copies, bytes) before each allocation, and
//! hands it on with the query ([`SearchBody::budget`]) for the engines to charge the rest.

use super::budget::{Budget, OverBudget};
use super::fields::TEXT_SUFFIX;
use serde::Serialize;
use serde_json::{Map, Value};
use std::ops::Bound;

/// Deepest nesting of queries accepted (far below serde_json's recursion limit of 128).
pub const MAX_DEPTH: usize = 32;
/// Longest `prefix` or `wildcard` value, in characters.
pub const MAX_PATTERN_CHARS: usize = 256;

/// Why a query cannot be run. The message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DslError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DslError> {
    Err(DslError(msg.into()))
}

impl From<OverBudget> for DslError {
    fn from(e: OverBudget) -> Self {
        DslError(e.to_string())
    }
}

/// A value in a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The value as text (numbers as Elasticsearch prints them).
    pub fn as_text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Num(n) => super::fields::format_number(*n),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// `and` or `or` between the terms of an analysed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    /// Any term.
    Or,
    /// Every term.
    And,
}

/// A query.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// Every document.
    MatchAll,
    /// No document.
    MatchNone,
    /// Clauses combined.
    Bool {
        /// All must match.
        must: Vec<Query>,
        /// Some should match (see `minimum_should_match`).
        should: Vec<Query>,
        /// None may match.
        must_not: Vec<Query>,
        /// All must match (no scoring; here the same as `must`).
        filter: Vec<Query>,
        /// Elasticsearch's spec (`2`, `-1`, `"75%"`); `None` means 1 when there is no
        /// `must`/`filter`, else 0.
        minimum_should_match: Option<MinimumShouldMatch>,
    },
    /// Analysed match: the whole value for keywords, its tokens for `.text` fields.
    Match {
        /// Field path.
        field: String,
        /// The value.
        query: Scalar,
        /// Between tokens.
        operator: Operator,
        /// The analysed tokens of `query` when `field` is a `.text` sub-field, else empty.
        tokens: Vec<String>,
    },
    /// The tokens in order, in one value of a `.text` field (keywords: as `match`).
    MatchPhrase {
        /// Field path.
        field: String,
        /// The phrase.
        query: Scalar,
        /// The analysed tokens of `query` when `field` is a `.text` sub-field, else empty.
        tokens: Vec<String>,
    },
    /// One exact value (keywords are normalized).
    Term {
        /// Field path.
        field: String,
        /// The value.
        value: Scalar,
    },
    /// Any of these exact values.
    Terms {
        /// Field path.
        field: String,
        /// The values.
        values: Vec<Scalar>,
    },
    /// Values within bounds: numbers, dates or keywords.
    Range {
        /// Field path.
        field: String,
        /// Lower bound.
        #[serde(skip)]
        lower: Bound<Scalar>,
        /// Upper bound.
        #[serde(skip)]
        upper: Bound<Scalar>,
    },
    /// The field has a value.
    Exists {
        /// Field path.
        field: String,
    },
    /// A keyword (or `.text` token) starting with `value`.
    Prefix {
        /// Field path.
        field: String,
        /// The prefix.
        value: String,
    },
    /// A keyword (or `.text` token) matching a pattern of `*` and `?`.
    Wildcard {
        /// Field path.
        field: String,
        /// The pattern.
        pattern: String,
    },
    /// Documents with these `_id`s.
    Ids {
        /// `{uuid}.{version}`s.
        values: Vec<String>,
    },
}

/// `minimum_should_match`: a count or a percentage, negative meaning "all but".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum MinimumShouldMatch {
    /// A number of clauses.
    Count(i64),
    /// A percentage of the clauses.
    Percent(f64),
}

impl MinimumShouldMatch {
    /// How many of `n` optional clauses must match.
    pub fn resolve(self, n: usize) -> usize {
        let n_i = n as i64;
        let k = match self {
            MinimumShouldMatch::Count(c) if c < 0 => n_i + c,
            MinimumShouldMatch::Count(c) => c,
            MinimumShouldMatch::Percent(p) if p < 0.0 => n_i - (n as f64 * -p / 100.0).floor() as i64,
            MinimumShouldMatch::Percent(p) => (n as f64 * p / 100.0).floor() as i64,
        };
        k.clamp(0, n_i) as usize
    }
}

impl Query {
    /// How many `should` clauses of a bool must match.
    pub fn required_should(
        must_len: usize,
        filter_len: usize,
        should_len: usize,
        msm: Option<MinimumShouldMatch>,
    ) -> usize {
        match msm {
            Some(m) => m.resolve(should_len),
            None if should_len > 0 && must_len == 0 && filter_len == 0 => 1,
            None => 0,
        }
    }
}

/// A parsed `es_query`: the request body of an Elasticsearch search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchBody {
    /// Its `query` (`match_all` when absent).
    pub query: Query,
    /// What parsing used of the request's budget; the engine charges the rest to it.
    #[serde(skip)]
    pub budget: Budget,
}

/// Keys of a search body that are accepted and ignored: the server sets sorting, paging
/// and `_source` itself, as the original did.
const IGNORED_BODY_KEYS: &[&str] = &[
    "_source",
    "sort",
    "size",
    "from",
    "track_scores",
    "track_total_hits",
    "timeout",
    "search_after",
];

/// Parse an `es_query` (a search body such as `{"query": {...}}`) with a fresh budget.
pub fn parse_body(es_query: &Value) -> Result<SearchBody, DslError> {
    parse_body_within(es_query, Budget::new())
}

/// Parse an `es_query`, charging `budget` (the request's, already charged for its body).
pub fn parse_body_within(es_query: &Value, mut budget: Budget) -> Result<SearchBody, DslError> {
    let obj = es_query
        .as_object()
        .ok_or_else(|| DslError("es_query must be a JSON object".into()))?;
    let mut query = Query::MatchAll;
    for (k, v) in obj {
        match k.as_str() {
            "query" => query = Parser { budget: &mut budget }.query(v, 0)?,
            k if IGNORED_BODY_KEYS.contains(&k) => {}
            other => return err(format!("es_query key [{other}] is not supported")),
        }
    }
    Ok(SearchBody { query, budget })
}

/// Parse one query object (`{"match": {...}}`) with a fresh budget.
pub fn parse_query(v: &Value) -> Result<SearchBody, DslError> {
    let mut budget = Budget::new();
    let query = Parser { budget: &mut budget }.query(v, 0)?;
    Ok(SearchBody { query, budget })
}

struct Parser<'b> {
    budget: &'b mut Budget,
}

fn single_entry<'a>(v: &'a Value, what: &str) -> Result<(&'a String, &'a Value), DslError> {
    let obj = v
        .as_object()
        .ok_or_else(|| DslError(format!("[{what}] must be an object")))?;
    let mut it = obj.iter();
    match (it.next(), it.next()) {
        (Some(e), None) => Ok(e),
        (None, _) => err(format!("[{what}] is empty")),
        (Some(_), Some(_)) => err(format!("[{what}] must hold exactly one field")),
    }
}

/// Reject keys of a query's options other than `allowed` (and `boost`, `_name`).
fn only_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), DslError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) && k != "boost" && k != "_name" {
            return err(format!("[{what}] option [{k}] is not supported"));
        }
    }
    Ok(())
}

fn parse_msm(v: &Value) -> Result<MinimumShouldMatch, DslError> {
    let bad = || DslError(format!("minimum_should_match [{v}] is not a count or a percentage"));
    match v {
        Value::Number(n) => n.as_i64().map(MinimumShouldMatch::Count).ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                p.trim()
                    .parse::<f64>()
                    .map(MinimumShouldMatch::Percent)
                    .map_err(|_| bad())
            } else {
                s.parse::<i64>().map(MinimumShouldMatch::Count).map_err(|_| bad())
            }
        }
        _ => Err(bad()),
    }
}

fn parse_operator(v: Option<&Value>) -> Result<Operator, DslError> {
    match v.and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        None => match v {
            None => Ok(Operator::Or),
            Some(other) => err(format!("operator [{other}] must be \"and\" or \"or\"")),
        },
        Some("or") => Ok(Operator::Or),
        Some("and") => Ok(Operator::And),
        Some(other) => err(format!("operator [{other}] must be \"and\" or \"or\"")),
    }
}

fn is_text(field: &str) -> bool {
    field.ends_with(TEXT_SUFFIX)
}

/// Bytes a copy of `s` holds.
fn scalar_bytes(s: &Scalar) -> usize {
    match s {
        Scalar::Str(s) => s.len(),
        Scalar::Num(_) | Scalar::Bool(_) => 0,
    }
}

/// Bytes a copy of `tokens` holds.
fn tokens_bytes(tokens: &[String]) -> usize {
    tokens.iter().map(String::len).sum()
}

impl Parser<'_> {
    /// A value as a scalar; a string is charged before it is copied.
    fn scalar(&mut self, v: &Value, what: &str) -> Result<Scalar, DslError> {
        match v {
            Value::String(s) => {
                self.budget.bytes(s.len())?;
                Ok(Scalar::Str(s.clone()))
            }
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| Scalar::Num(f + 0.0))
                .ok_or_else(|| DslError(format!("[{what}] number out of range"))),
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            _ => err(format!("[{what}] value must be a string, number or boolean")),
        }
    }

    fn string(&mut self, v: &Value, what: &str) -> Result<String, DslError> {
        match self.scalar(v, what)? {
            Scalar::Str(s) => Ok(s),
            other => Ok(other.as_text()),
        }
    }

    fn field(&mut self, f: &str, what: &str) -> Result<String, DslError> {
        if f.is_empty() || f.len() > 1024 {
            return err(format!("[{what}] field name must be 1 to 1024 characters"));
        }
        if f.contains('*') {
            return err(format!("[{what}] field name patterns ({f}) are not supported"));
        }
        self.budget.bytes(f.len())?;
        Ok(f.to_string())
    }

    /// The analysed tokens of `v` for `field`: only `.text` fields are analysed. A string is
    /// analysed from the request's own text, before anything is copied.
    fn tokens_of(&mut self, field: &str, v: &Value, what: &str) -> Result<Vec<String>, DslError> {
        if !is_text(field) {
            return Ok(Vec::new());
        }
        match v {
            Value::String(s) => Ok(self.budget.analyze(s)?),
            other => {
                let s = self.scalar(other, what)?;
                Ok(self.budget.analyze(&s.as_text())?)
            }
        }
    }

    fn query(&mut self, v: &Value, depth: usize) -> Result<Query, DslError> {
        if depth >= MAX_DEPTH {
            return err(format!("query nested deeper than {MAX_DEPTH} levels"));
        }
        self.budget.nodes(1)?;
        let (kind, body) = single_entry(v, "query")?;
        match kind.as_str() {
            "match_all" | "match_none" => {
                if let Some(o) = body.as_object() {
                    only_keys(o, &[], kind)?;
                } else {
                    return err(format!("[{kind}] must be an object"));
                }
                Ok(if kind == "match_all" {
                    Query::MatchAll
                } else {
                    Query::MatchNone
                })
            }
            "bool" => self.bool(body, depth),
            "constant_score" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| DslError("[constant_score] must be an object".into()))?;
                only_keys(o, &["filter"], kind)?;
                let f = o
                    .get("filter")
                    .ok_or_else(|| DslError("[constant_score] requires [filter]".into()))?;
                self.query(f, depth + 1)
            }
            "match" => {
                let (field, q) = single_entry(body, kind)?;
                let field = self.field(field, kind)?;
                match q {
                    Value::Object(o) => {
                        only_keys(
                            o,
                            &["query", "operator", "minimum_should_match", "zero_terms_query"],
                            kind,
                        )?;
                        if o.get("zero_terms_query")
                            .and_then(Value::as_str)
                            .is_some_and(|z| z != "none")
                        {
                            return err("[match] zero_terms_query other than \"none\" is not supported");
                        }
                        let value = o
                            .get("query")
                            .ok_or_else(|| DslError("[match] requires [query]".into()))?;
                        let operator = parse_operator(o.get("operator"))?;
                        let msm = o.get("minimum_should_match").map(parse_msm).transpose()?;
                        let tokens = self.tokens_of(&field, value, kind)?;
                        let query = self.scalar(value, kind)?;
                        match msm {
                            None => Ok(Query::Match {
                                field,
                                query,
                                operator,
                                tokens,
                            }),
                            Some(msm) => self.match_with_msm(field, query, tokens, msm),
                        }
                    }
                    other => {
                        let tokens = self.tokens_of(&field, other, kind)?;
                        Ok(Query::Match {
                            field,
                            query: self.scalar(other, kind)?,
                            operator: Operator::Or,
                            tokens,
                        })
                    }
                }
            }
            "match_phrase" => {
                let (field, q) = single_entry(body, kind)?;
                let field = self.field(field, kind)?;
                let value = match q {
                    Value::Object(o) => {
                        only_keys(o, &["query", "slop"], kind)?;
                        if o.get("slop").is_some_and(|s| s.as_u64() != Some(0)) {
                            return err("[match_phrase] slop other than 0 is not supported");
                        }
                        o.get("query")
                            .ok_or_else(|| DslError("[match_phrase] requires [query]".into()))?
                    }
                    other => other,
                };
                let tokens = self.tokens_of(&field, value, kind)?;
                let query = self.scalar(value, kind)?;
                Ok(Query::MatchPhrase { field, query, tokens })
            }
            "multi_match" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| DslError("[multi_match] must be an object".into()))?;
                only_keys(o, &["query", "fields", "type", "operator"], kind)?;
                let value = o
                    .get("query")
                    .ok_or_else(|| DslError("[multi_match] requires [query]".into()))?;
                let fields = o
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| DslError("[multi_match] requires [fields], a list".into()))?;
                let operator = parse_operator(o.get("operator"))?;
                let phrase = match o.get("type").and_then(Value::as_str).unwrap_or("best_fields") {
                    "best_fields" | "most_fields" => false,
                    "phrase" => true,
                    other => return err(format!("[multi_match] type [{other}] is not supported")),
                };
                // One clause per field: charged before any is made.
                self.budget.expansions(fields.len())?;
                let query = self.scalar(value, kind)?;
                let mut analysed: Option<Vec<String>> = None;
                let mut should = Vec::new();
                for f in fields {
                    let f = f
                        .as_str()
                        .ok_or_else(|| DslError("[multi_match] fields must be strings".into()))?;
                    // `field^2` boosts change scores only; the sort here is by id.
                    let f = self.field(f.split('^').next().unwrap_or(f), kind)?;
                    // The value is analysed once and its tokens copied to each `.text` field.
                    let tokens = if is_text(&f) {
                        let tokens = match &analysed {
                            Some(t) => t,
                            None => analysed.insert(self.budget.analyze(&query.as_text())?),
                        };
                        self.budget.bytes(tokens_bytes(tokens))?;
                        tokens.clone()
                    } else {
                        Vec::new()
                    };
                    self.budget.bytes(scalar_bytes(&query))?;
                    let query = query.clone();
                    should.push(if phrase {
                        Query::MatchPhrase {
                            field: f,
                            query,
                            tokens,
                        }
                    } else {
                        Query::Match {
                            field: f,
                            query,
                            operator,
                            tokens,
                        }
                    });
                }
                Ok(bool_should(should))
            }
            "term" => {
                let (field, q) = single_entry(body, kind)?;
                let field = self.field(field, kind)?;
                let value = match q {
                    Value::Object(o) => {
                        only_keys(o, &["value"], kind)?;
                        let v = o
                            .get("value")
                            .ok_or_else(|| DslError("[term] requires [value]".into()))?;
                        self.scalar(v, kind)?
                    }
                    other => self.scalar(other, kind)?,
                };
                Ok(Query::Term { field, value })
            }
            "terms" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| DslError("[terms] must be an object".into()))?;
                let mut found = None;
                for (k, v) in o {
                    if k == "boost" || k == "_name" {
                        continue;
                    }
                    if found.is_some() {
                        return err("[terms] must hold exactly one field");
                    }
                    found = Some((k, v));
                }
                let (field, list) = found.ok_or_else(|| DslError("[terms] is empty".into()))?;
                let field = self.field(field, kind)?;
                let list = list
                    .as_array()
                    .ok_or_else(|| DslError("[terms] values must be a list (terms lookup is not supported)".into()))?;
                self.budget.nodes(list.len())?;
                let values = list.iter().map(|v| self.scalar(v, kind)).collect::<Result<_, _>>()?;
                Ok(Query::Terms { field, values })
            }
            "range" => {
                let (field, q) = single_entry(body, kind)?;
                let field = self.field(field, kind)?;
                let o = q
                    .as_object()
                    .ok_or_else(|| DslError("[range] bounds must be an object".into()))?;
                only_keys(
                    o,
                    &["gt", "gte", "lt", "lte", "from", "to", "include_lower", "include_upper"],
                    kind,
                )?;
                let incl = |k: &str| o.get(k).map(|v| v.as_bool().unwrap_or(true)).unwrap_or(true);
                let mut lower = Bound::Unbounded;
                let mut upper = Bound::Unbounded;
                if let Some(v) = o.get("from").filter(|v| !v.is_null()) {
                    let s = self.scalar(v, kind)?;
                    lower = if incl("include_lower") {
                        Bound::Included(s)
                    } else {
                        Bound::Excluded(s)
                    };
                }
                if let Some(v) = o.get("to").filter(|v| !v.is_null()) {
                    let s = self.scalar(v, kind)?;
                    upper = if incl("include_upper") {
                        Bound::Included(s)
                    } else {
                        Bound::Excluded(s)
                    };
                }
                for (k, v) in o {
                    match k.as_str() {
                        "gt" => lower = Bound::Excluded(self.scalar(v, kind)?),
                        "gte" => lower = Bound::Included(self.scalar(v, kind)?),
                        "lt" => upper = Bound::Excluded(self.scalar(v, kind)?),
                        "lte" => upper = Bound::Included(self.scalar(v, kind)?),
                        _ => {}
                    }
                }
                for b in [&lower, &upper] {
                    if let Bound::Included(Scalar::Str(s)) | Bound::Excluded(Scalar::Str(s)) = b {
                        if s.contains("now") || s.contains("||") {
                            return err(format!("[range] date math ({s}) is not supported"));
                        }
                    }
                }
                Ok(Query::Range { field, lower, upper })
            }
            "exists" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| DslError("[exists] must be an object".into()))?;
                only_keys(o, &["field"], kind)?;
                let f = o
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| DslError("[exists] requires [field]".into()))?;
                Ok(Query::Exists {
                    field: self.field(f, kind)?,
                })
            }
            "prefix" | "wildcard" => {
                let (field, q) = single_entry(body, kind)?;
                let field = self.field(field, kind)?;
                let v = match q {
                    Value::Object(o) => {
                        only_keys(o, &["value", "wildcard"], kind)?;
                        o.get("value")
                            .or_else(|| o.get("wildcard"))
                            .ok_or_else(|| DslError(format!("[{kind}] requires [value]")))?
                    }
                    other => other,
                };
                if v.as_str().is_some_and(|s| s.chars().nth(MAX_PATTERN_CHARS).is_some()) {
                    return err(format!("[{kind}] value longer than {MAX_PATTERN_CHARS} characters"));
                }
                let value = self.string(v, kind)?;
                Ok(if kind == "prefix" {
                    Query::Prefix { field, value }
                } else {
                    Query::Wildcard { field, pattern: value }
                })
            }
            "ids" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| DslError("[ids] must be an object".into()))?;
                only_keys(o, &["values", "type"], kind)?;
                let list = o
                    .get("values")
                    .and_then(Value::as_array)
                    .ok_or_else(|| DslError("[ids] requires [values], a list".into()))?;
                self.budget.nodes(list.len())?;
                let values = list.iter().map(|v| self.string(v, kind)).collect::<Result<_, _>>()?;
                Ok(Query::Ids { values })
            }
            "query_string" => self.query_string(body),
            other => err(format!("query type [{other}] is not supported")),
        }
    }

    /// `minimum_should_match` on a match counts its tokens: one match per token.
    fn match_with_msm(
        &mut self,
        field: String,
        query: Scalar,
        tokens: Vec<String>,
        msm: MinimumShouldMatch,
    ) -> Result<Query, DslError> {
        if tokens.len() <= 1 {
            return Ok(Query::Match {
                field,
                query,
                operator: Operator::Or,
                tokens,
            });
        }
        self.budget.expansions(tokens.len())?;
        let mut should = Vec::with_capacity(tokens.len());
        for t in tokens {
            // Each clause holds the field and its token twice (as value and as token).
            self.budget.bytes(field.len() + 2 * t.len())?;
            should.push(Query::Match {
                field: field.clone(),
                query: Scalar::Str(t.clone()),
                operator: Operator::Or,
                tokens: vec![t],
            });
        }
        Ok(Query::Bool {
            must: vec![],
            should,
            must_not: vec![],
            filter: vec![],
            minimum_should_match: Some(msm),
        })
    }

    fn clauses(&mut self, v: Option<&Value>, depth: usize, what: &str) -> Result<Vec<Query>, DslError> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|q| self.query(q, depth + 1)).collect(),
            Some(o @ Value::Object(_)) => Ok(vec![self.query(o, depth + 1)?]),
            Some(_) => err(format!("[bool] {what} must be a query or a list of queries")),
        }
    }

    fn bool(&mut self, body: &Value, depth: usize) -> Result<Query, DslError> {
        let o = body
            .as_object()
            .ok_or_else(|| DslError("[bool] must be an object".into()))?;
        only_keys(
            o,
            &[
                "must",
                "should",
                "must_not",
                "filter",
                "minimum_should_match",
                "adjust_pure_negative",
            ],
            "bool",
        )?;
        Ok(Query::Bool {
            must: self.clauses(o.get("must"), depth, "must")?,
            should: self.clauses(o.get("should"), depth, "should")?,
            must_not: self.clauses(o.get("must_not"), depth, "must_not")?,
            filter: self.clauses(o.get("filter"), depth, "filter")?,
            minimum_should_match: o.get("minimum_should_match").map(parse_msm).transpose()?,
        })
    }

    fn query_string(&mut self, body: &Value) -> Result<Query, DslError> {
        let o = body
            .as_object()
            .ok_or_else(|| DslError("[query_string] must be an object".into()))?;
        only_keys(
            o,
            &[
                "query",
                "default_field",
                "fields",
                "default_operator",
                "analyze_wildcard",
                "lenient",
            ],
            "query_string",
        )?;
        let text = o
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| DslError("[query_string] requires [query], a string".into()))?;
        let mut fields = Vec::new();
        if let Some(f) = o.get("default_field") {
            let f = f
                .as_str()
                .ok_or_else(|| DslError("[query_string] default_field must be a string".into()))?;
            fields.push(f);
        }
        if let Some(list) = o.get("fields") {
            let list = list
                .as_array()
                .ok_or_else(|| DslError("[query_string] fields must be a list".into()))?;
            for f in list {
                let f = f
                    .as_str()
                    .ok_or_else(|| DslError("[query_string] fields must be strings".into()))?;
                fields.push(f.split('^').next().unwrap_or(f));
            }
        }
        let mut default_fields = Vec::new();
        for f in fields {
            if f != "*" {
                default_fields.push(self.field(f, "query_string")?);
            }
        }
        let op = parse_operator(o.get("default_operator"))?;
        let tokens = qs::lex(text, self.budget)?;
        let mut p = qs::QsParser {
            tokens,
            pos: 0,
            default_fields,
            op,
            parser: Parser {
                budget: &mut *self.budget,
            },
        };
        let q = p.expr(0)?;
        if let Some(t) = p.tokens.get(p.pos) {
            return err(format!("[query_string] unexpected {t:?}"));
        }
        Ok(q)
    }
}

fn bool_should(should: Vec<Query>) -> Query {
    Query::Bool {
        must: vec![],
        should,
        must_not: vec![],
        filter: vec![],
        minimum_should_match: None,
    }
}

/// The common subset of Lucene's query syntax: `field:value`, `field:"a phrase"`,
/// `field:pre*`, `field:[a TO b]` / `{a TO b}`, `_exists_:field`, `AND`/`OR`/`NOT`,
/// `+`/`-`, parentheses.
mod qs {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Tok {
        Word(String),
        Phrase(String),
        Range(String, String, bool, bool),
        Open,
        Close,
        And,
        Or,
        Not,
        Plus,
        Colon,
    }

    /// The tokens of `s`, each charged to `budget` before it is made.
    pub fn lex(s: &str, budget: &mut Budget) -> Result<Vec<Tok>, DslError> {
        let mut out = Vec::new();
        // A byte offset into `s`, always at a character boundary.
        let mut pos = 0;
        let special = |c: char| c.is_whitespace() || "()\":[]{}".contains(c);
        while let Some(c) = s[pos..].chars().next() {
            if c.is_whitespace() {
                pos += c.len_utf8();
                continue;
            }
            budget.tokens(1)?;
            // Each arm gives the token and the offset just past it.
            let (tok, next) = match c {
                '(' => (Tok::Open, pos + 1),
                ')' => (Tok::Close, pos + 1),
                ':' => (Tok::Colon, pos + 1),
                '+' => (Tok::Plus, pos + 1),
                '-' | '!' => (Tok::Not, pos + 1),
                '"' => {
                    let mut buf = String::new();
                    let mut chars = s[pos + 1..].char_indices();
                    let end = loop {
                        match chars.next() {
                            None => return err("[query_string] unterminated quote"),
                            Some((j, '"')) => break pos + 1 + j + 1,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, escaped)) => buf.push(escaped),
                                None => return err("[query_string] unterminated quote"),
                            },
                            Some((_, ch)) => buf.push(ch),
                        }
                    };
                    (Tok::Phrase(buf), end)
                }
                '[' | '{' => {
                    let rest = &s[pos..];
                    let close = rest
                        .find([']', '}'])
                        .ok_or_else(|| DslError("[query_string] unterminated range".into()))?;
                    let inner = &rest[1..close];
                    let mut parts = inner.split(" TO ");
                    let (Some(lo), Some(hi), None) = (parts.next(), parts.next(), parts.next()) else {
                        return err(format!("[query_string] range [{inner}] must be [a TO b]"));
                    };
                    let tok = Tok::Range(
                        lo.trim().to_string(),
                        hi.trim().to_string(),
                        c == '[',
                        rest.as_bytes().get(close) == Some(&b']'),
                    );
                    (tok, pos + close + 1)
                }
                ']' | '}' => return err("[query_string] unbalanced range bracket"),
                _ => {
                    // `c` is not special (those are matched above): the word is not empty.
                    let mut buf = String::new();
                    let rest = &s[pos..];
                    let mut end = rest.len();
                    let mut chars = rest.char_indices();
                    while let Some((j, ch)) = chars.next() {
                        if special(ch) {
                            end = j;
                            break;
                        }
                        if ch == '\\' {
                            if let Some((_, escaped)) = chars.next() {
                                buf.push(escaped);
                                continue;
                            }
                        }
                        buf.push(ch);
                    }
                    let tok = match buf.as_str() {
                        "AND" | "&&" => Tok::And,
                        "OR" | "||" => Tok::Or,
                        "NOT" => Tok::Not,
                        _ => Tok::Word(buf),
                    };
                    (tok, pos + end.max(c.len_utf8()))
                }
            };
            pos = next;
            out.push(tok);
        }
        Ok(out)
    }

    pub struct QsParser<'b> {
        pub tokens: Vec<Tok>,
        pub pos: usize,
        pub default_fields: Vec<String>,
        pub op: Operator,
        pub parser: Parser<'b>,
    }

    impl QsParser<'_> {
        fn peek(&self) -> Option<&Tok> {
            self.tokens.get(self.pos)
        }

        pub fn expr(&mut self, depth: usize) -> Result<Query, DslError> {
            if depth >= MAX_DEPTH {
                return err(format!("[query_string] nested deeper than {MAX_DEPTH} levels"));
            }
            let mut ors = vec![self.and_expr(depth)?];
            while self.peek() == Some(&Tok::Or) {
                self.pos += 1;
                ors.push(self.and_expr(depth)?);
            }
            Ok(if ors.len() == 1 {
                ors.remove(0)
            } else {
                bool_should(ors)
            })
        }

        fn and_expr(&mut self, depth: usize) -> Result<Query, DslError> {
            // Juxtaposed clauses take the default operator; `AND` binds them explicitly.
            let mut must = Vec::new();
            let mut should = Vec::new();
            let mut must_not = Vec::new();
            let mut explicit_and = false;
            loop {
                match self.peek() {
                    None | Some(Tok::Or) | Some(Tok::Close) => break,
                    Some(Tok::And) => {
                        self.pos += 1;
                        explicit_and = true;
                        continue;
                    }
                    _ => {}
                }
                let (negated, required) = match self.peek() {
                    Some(Tok::Not) => {
                        self.pos += 1;
                        (true, false)
                    }
                    Some(Tok::Plus) => {
                        self.pos += 1;
                        (false, true)
                    }
                    _ => (false, false),
                };
                let q = self.primary(depth)?;
                if negated {
                    must_not.push(q);
                } else if required || explicit_and || self.op == Operator::And {
                    must.push(q);
                } else {
                    should.push(q);
                }
            }
            if explicit_and {
                must.append(&mut should);
            }
            match (must.len(), should.len(), must_not.len()) {
                (0, 0, 0) => err("[query_string] empty clause"),
                (1, 0, 0) => Ok(must.remove(0)),
                (0, 1, 0) => Ok(should.remove(0)),
                _ => Ok(Query::Bool {
                    must,
                    should,
                    must_not,
                    filter: vec![],
                    minimum_should_match: None,
                }),
            }
        }

        fn primary(&mut self, depth: usize) -> Result<Query, DslError> {
            match self.tokens.get(self.pos).cloned() {
                Some(Tok::Open) => {
                    self.pos += 1;
                    let q = self.expr(depth + 1)?;
                    if self.peek() != Some(&Tok::Close) {
                        return err("[query_string] missing )");
                    }
                    self.pos += 1;
                    Ok(q)
                }
                Some(Tok::Word(w)) if self.tokens.get(self.pos + 1) == Some(&Tok::Colon) => {
                    self.pos += 2;
                    let field = self.parser.field(&w, "query_string")?;
                    if field == "_exists_" {
                        return match self.tokens.get(self.pos).cloned() {
                            Some(Tok::Word(f)) => {
                                self.pos += 1;
                                Ok(Query::Exists {
                                    field: self.parser.field(&f, "query_string")?,
                                })
                            }
                            _ => err("[query_string] _exists_ needs a field name"),
                        };
                    }
                    if self.peek() == Some(&Tok::Open) {
                        let saved = std::mem::replace(&mut self.default_fields, vec![field]);
                        self.pos += 1;
                        let q = self.expr(depth + 1);
                        self.default_fields = saved;
                        let q = q?;
                        if self.peek() != Some(&Tok::Close) {
                            return err("[query_string] missing )");
                        }
                        self.pos += 1;
                        return Ok(q);
                    }
                    let v = self.value()?;
                    self.parser.budget.expansions(1)?;
                    let tokens = self.analysed(&v, std::slice::from_ref(&field))?;
                    Ok(value_query(field, v, tokens))
                }
                Some(Tok::Word(_)) | Some(Tok::Phrase(_)) | Some(Tok::Range(..)) => {
                    let v = self.value()?;
                    if self.default_fields.is_empty() {
                        return err("[query_string] a term without a field needs default_field or fields \
                             (searching every field is not supported)");
                    }
                    // A term with several default fields becomes one clause per field: all
                    // of them charged before any is made.
                    self.parser.budget.expansions(self.default_fields.len())?;
                    let fields = std::mem::take(&mut self.default_fields);
                    let made = self.copies(&fields, &v);
                    self.default_fields = fields;
                    let mut qs = made?;
                    Ok(match qs.len() {
                        1 => qs.pop().unwrap_or(Query::MatchNone),
                        _ => bool_should(qs),
                    })
                }
                Some(t) => err(format!("[query_string] unexpected {t:?}")),
                None => err("[query_string] unexpected end of query"),
            }
        }

        /// The clause of value `v` at each of `fields`, the value analysed once.
        fn copies(&mut self, fields: &[String], v: &Tok) -> Result<Vec<Query>, DslError> {
            let tokens = self.analysed(v, fields)?;
            let value_bytes = match v {
                Tok::Word(w) | Tok::Phrase(w) => w.len(),
                Tok::Range(lo, hi, ..) => lo.len() + hi.len(),
                _ => 0,
            };
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                self.parser
                    .budget
                    .bytes(f.len() + value_bytes + tokens_bytes(&tokens))?;
                let tokens = if is_text(f) { tokens.clone() } else { Vec::new() };
                out.push(value_query(f.clone(), v.clone(), tokens));
            }
            Ok(out)
        }

        /// The analysed tokens of a word or phrase, when one of `fields` is a `.text`
        /// field (then a `match` or `match_phrase` will look for them); patterns longer
        /// than [`MAX_PATTERN_CHARS`] are refused here, as `prefix` and `wildcard` are.
        fn analysed(&mut self, v: &Tok, fields: &[String]) -> Result<Vec<String>, DslError> {
            let text = match v {
                Tok::Word(w) if w.contains(['*', '?']) => {
                    if w.chars().nth(MAX_PATTERN_CHARS).is_some() {
                        return err(format!(
                            "[query_string] pattern longer than {MAX_PATTERN_CHARS} characters"
                        ));
                    }
                    return Ok(Vec::new());
                }
                Tok::Word(w) | Tok::Phrase(w) => w,
                _ => return Ok(Vec::new()),
            };
            if fields.iter().any(|f| is_text(f)) {
                Ok(self.parser.budget.analyze(text)?)
            } else {
                Ok(Vec::new())
            }
        }

        fn value(&mut self) -> Result<Tok, DslError> {
            match self.tokens.get(self.pos).cloned() {
                Some(t @ (Tok::Word(_) | Tok::Phrase(_) | Tok::Range(..))) => {
                    self.pos += 1;
                    Ok(t)
                }
                other => err(format!("[query_string] expected a value, found {other:?}")),
            }
        }
    }

    /// The query of value `v` at `field`; `tokens` are its analysed tokens when it is a
    /// word or phrase at a `.text` field.
    fn value_query(field: String, v: Tok, tokens: Vec<String>) -> Query {
        match v {
            Tok::Phrase(p) => Query::MatchPhrase {
                field,
                query: Scalar::Str(p),
                tokens,
            },
            Tok::Range(lo, hi, incl_lo, incl_hi) => {
                let b = |s: String, incl: bool| {
                    if s == "*" {
                        Bound::Unbounded
                    } else if incl {
                        Bound::Included(Scalar::Str(s))
                    } else {
                        Bound::Excluded(Scalar::Str(s))
                    }
                };
                Query::Range {
                    field,
                    lower: b(lo, incl_lo),
                    upper: b(hi, incl_hi),
                }
            }
            Tok::Word(w) if w == "*" => Query::Exists { field },
            Tok::Word(w) if w.ends_with('*') && !w[..w.len() - 1].contains(['*', '?']) => Query::Prefix {
                field,
                value: w[..w.len() - 1].to_string(),
            },
            Tok::Word(w) if w.contains(['*', '?']) => Query::Wildcard { field, pattern: w },
            Tok::Word(w) => Query::Match {
                field,
                query: Scalar::Str(w),
                operator: Operator::Or,
                tokens,
            },
            _ => Query::MatchNone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(v: Value) -> Result<Query, DslError> {
        parse_body(&json!({ "query": v })).map(|b| b.query)
    }

    #[test]
    fn parses_the_originals_queries() {
        let b = parse_body(&json!({"query": {"bool": {"must": [
            {"match": {"files.donor_organism_json.medical_history.smoking_history": "yes"}},
            {"match": {"files.specimen_from_organism_json.genus_species.text": "Homo sapiens"}}]}}}))
        .unwrap();
        let Query::Bool { must, .. } = b.query else { panic!() };
        assert_eq!(must.len(), 2);
        assert_eq!(
            q(json!({"term": {"admin_deleted": true}})).unwrap(),
            Query::Term {
                field: "admin_deleted".into(),
                value: Scalar::Bool(true)
            }
        );
        assert_eq!(parse_body(&json!({})).unwrap().query, Query::MatchAll);
        assert!(matches!(
            q(json!({"range": {"a": {"gte": "2018-01-01", "lt": 5}}})).unwrap(),
            Query::Range {
                lower: Bound::Included(Scalar::Str(_)),
                upper: Bound::Excluded(Scalar::Num(_)),
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_it_does_not_support_by_name() {
        for (v, needle) in [
            (json!({"percolate": {}}), "percolate"),
            (json!({"match": {"a": {"query": "x", "fuzziness": 2}}}), "fuzziness"),
            (json!({"match": {"a": "x", "b": "y"}}), "exactly one"),
            (json!({"match": {"a": null}}), "string, number or boolean"),
            (json!({"terms": {"a": {"index": "x"}}}), "terms lookup"),
            (json!({"range": {"a": {"gte": "now-1d"}}}), "date math"),
            (json!({"query_string": {"query": "x"}}), "default_field"),
            (json!([]), "object"),
        ] {
            let e = q(v.clone()).unwrap_err().0;
            assert!(e.contains(needle), "{v}: {e}");
        }
        assert!(parse_body(&json!({"aggs": {}})).unwrap_err().0.contains("aggs"));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = json!({"match_all": {}});
        for _ in 0..MAX_DEPTH + 1 {
            v = json!({"bool": {"must": [v]}});
        }
        assert!(q(v).unwrap_err().0.contains("nested deeper"));
    }

    #[test]
    fn query_string_subset() {
        let got = q(
            json!({"query_string": {"query": "a.b:x AND (c:\"p q\" OR d:pre*) NOT _exists_:e",
            "default_operator": "or"}}),
        )
        .unwrap();
        let Query::Bool { must, must_not, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(must.len(), 2);
        assert_eq!(must_not, vec![Query::Exists { field: "e".into() }]);
        assert!(matches!(
            q(json!({"query_string": {"query": "n:[1 TO *}"}})).unwrap(),
            Query::Range {
                upper: Bound::Unbounded,
                ..
            }
        ));
        assert!(matches!(
            q(json!({"query_string": {"query": "homo", "default_field": "x.text"}})).unwrap(),
            Query::Match { .. }
        ));
    }

    #[test]
    fn query_string_lexing_keeps_escapes_and_unicode() {
        use qs::Tok::*;
        let lexed = qs::lex(r#"é:ü\:x a\ b "q \" r" [1 TO *} -n +m x\"#, &mut Budget::new()).unwrap();
        assert_eq!(
            lexed,
            vec![
                Word("é".into()),
                Colon,
                Word("ü:x".into()),
                Word("a b".into()),
                Phrase("q \" r".into()),
                Range("1".into(), "*".into(), true, false),
                Not,
                Word("n".into()),
                Plus,
                Word("m".into()),
                Word("x\\".into()),
            ]
        );
        for bad in ["\"unterminated", "[1 TO", "a]", "[1 2]", "\"\\"] {
            assert!(qs::lex(bad, &mut Budget::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn analysed_values_are_held_by_the_query() {
        let Query::Match { tokens, .. } = q(json!({"match": {"a.text": "Homo sapiens"}})).unwrap() else {
            panic!()
        };
        assert_eq!(tokens, vec!["homo", "sapiens"]);
        let Query::Match { tokens, .. } = q(json!({"match": {"a": "Homo sapiens"}})).unwrap() else {
            panic!()
        };
        assert!(tokens.is_empty(), "keywords are matched whole");
    }

    /// The two search bombs of issue 9 (a 23 KB `query_string` that expanded to a million
    /// clauses; a `match` of a million words), refused by the limit they pass.
    #[test]
    fn search_bombs_are_refused_naming_the_limit() {
        let fields: Vec<String> = (0..2000).map(|i| format!("files.f{i}.text")).collect();
        let words = vec!["w"; 500].join(" ");
        let e = q(json!({"query_string": {"query": words, "fields": fields}}))
            .unwrap_err()
            .0;
        assert!(e.contains("limit of 16384 clauses"), "{e}");
        let million = "word ".repeat(1_000_000);
        for field in ["a.text", "a"] {
            let e = q(json!({"match": {field: million}})).unwrap_err().0;
            assert!(e.contains("limit of"), "{field}: {e}");
        }
        let e = q(json!({"match": {"a.text": million}})).unwrap_err().0;
        assert!(e.contains("limit of 4096 tokens"), "{e}");
        let e = q(json!({"match": {"a": million}})).unwrap_err().0;
        assert!(e.contains("bytes of query text"), "{e}");
        // A long value copied to many fields: charged for every copy.
        let long = "-".repeat(100_000);
        let e = q(json!({"multi_match": {"query": long, "fields": vec!["a"; 100]}}))
            .unwrap_err()
            .0;
        assert!(e.contains("bytes of query text"), "{e}");
        let e = q(json!({"query_string": {"query": "x".repeat(300) + "*", "default_field": "a"}}))
            .unwrap_err()
            .0;
        assert!(e.contains("longer than 256"), "{e}");
    }

    #[test]
    fn large_ordinary_queries_fit_the_budget() {
        let values: Vec<String> = (0..4000).map(|i| format!("{i:08}-uuid")).collect();
        assert!(q(json!({"terms": {"uuid": values}})).is_ok());
        let fields: Vec<String> = (0..100).map(|i| format!("files.f{i}.text")).collect();
        let text = vec!["word"; 30].join(" ");
        let body = parse_body(&json!({"query": {"multi_match": {"query": text, "fields": fields}}})).unwrap();
        let mut body = body;
        assert!(body.budget.clauses(&body.query).is_ok());
        let words = vec!["w"; 200].join(" ");
        assert!(q(json!({"query_string": {"query": words, "fields": ["a.text", "b"]}})).is_ok());
    }

    #[test]
    fn minimum_should_match() {
        assert_eq!(MinimumShouldMatch::Count(2).resolve(3), 2);
        assert_eq!(MinimumShouldMatch::Count(-1).resolve(3), 2);
        assert_eq!(MinimumShouldMatch::Percent(50.0).resolve(3), 1);
        assert_eq!(MinimumShouldMatch::Percent(-25.0).resolve(4), 3);
        assert_eq!(MinimumShouldMatch::Count(9).resolve(3), 3);
    }
}
