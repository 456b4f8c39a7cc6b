//! The Elasticsearch query DSL, parsed into a typed AST. The subset covers what portals
//! and the original's tests send; anything else is refused with an error that names it.
//!
//! `multi_match`, `query_string` and `constant_score` are lowered to the core queries here,
//! so engines implement only [`Query`]'s variants.

use serde::Serialize;
use serde_json::{Map, Value};
use std::ops::Bound;

/// Deepest nesting of queries accepted (far below serde_json's recursion limit of 128).
pub const MAX_DEPTH: usize = 32;
/// Most clauses, values or tokens one query may hold in total.
pub const MAX_CLAUSES: usize = 4096;

/// Why a query cannot be run. The message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DslError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DslError> {
    Err(DslError(msg.into()))
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
    },
    /// The tokens in order, in one value of a `.text` field (keywords: as `match`).
    MatchPhrase {
        /// Field path.
        field: String,
        /// The phrase.
        query: Scalar,
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

/// Parse an `es_query` (a search body such as `{"query": {...}}`).
pub fn parse_body(es_query: &Value) -> Result<SearchBody, DslError> {
    let obj = es_query
        .as_object()
        .ok_or_else(|| DslError("es_query must be a JSON object".into()))?;
    let mut query = Query::MatchAll;
    let mut budget = MAX_CLAUSES;
    for (k, v) in obj {
        match k.as_str() {
            "query" => query = Parser { budget: &mut budget }.query(v, 0)?,
            k if IGNORED_BODY_KEYS.contains(&k) => {}
            other => return err(format!("es_query key [{other}] is not supported")),
        }
    }
    Ok(SearchBody { query })
}

/// Parse one query object (`{"match": {...}}`).
pub fn parse_query(v: &Value) -> Result<Query, DslError> {
    let mut budget = MAX_CLAUSES;
    Parser { budget: &mut budget }.query(v, 0)
}

struct Parser<'b> {
    budget: &'b mut usize,
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

fn scalar(v: &Value, what: &str) -> Result<Scalar, DslError> {
    match v {
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Scalar::Num(f + 0.0))
            .ok_or_else(|| DslError(format!("[{what}] number out of range"))),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        _ => err(format!("[{what}] value must be a string, number or boolean")),
    }
}

fn string(v: &Value, what: &str) -> Result<String, DslError> {
    match scalar(v, what)? {
        Scalar::Str(s) => Ok(s),
        other => Ok(other.as_text()),
    }
}

fn check_field(f: &str, what: &str) -> Result<String, DslError> {
    if f.is_empty() || f.len() > 1024 {
        return err(format!("[{what}] field name must be 1 to 1024 characters"));
    }
    if f.contains('*') {
        return err(format!("[{what}] field name patterns ({f}) are not supported"));
    }
    Ok(f.to_string())
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

impl Parser<'_> {
    fn spend(&mut self, n: usize) -> Result<(), DslError> {
        if *self.budget < n {
            return err(format!("query has more than {MAX_CLAUSES} clauses, values or tokens"));
        }
        *self.budget -= n;
        Ok(())
    }

    fn query(&mut self, v: &Value, depth: usize) -> Result<Query, DslError> {
        if depth >= MAX_DEPTH {
            return err(format!("query nested deeper than {MAX_DEPTH} levels"));
        }
        self.spend(1)?;
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
                let field = check_field(field, kind)?;
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
                        let query = scalar(
                            o.get("query")
                                .ok_or_else(|| DslError("[match] requires [query]".into()))?,
                            kind,
                        )?;
                        let operator = parse_operator(o.get("operator"))?;
                        let m = Query::Match { field, query, operator };
                        match o.get("minimum_should_match") {
                            None => Ok(m),
                            Some(msm) => self.match_with_msm(m, parse_msm(msm)?),
                        }
                    }
                    other => Ok(Query::Match {
                        field,
                        query: scalar(other, kind)?,
                        operator: Operator::Or,
                    }),
                }
            }
            "match_phrase" => {
                let (field, q) = single_entry(body, kind)?;
                let field = check_field(field, kind)?;
                let query = match q {
                    Value::Object(o) => {
                        only_keys(o, &["query", "slop"], kind)?;
                        if o.get("slop").is_some_and(|s| s.as_u64() != Some(0)) {
                            return err("[match_phrase] slop other than 0 is not supported");
                        }
                        scalar(
                            o.get("query")
                                .ok_or_else(|| DslError("[match_phrase] requires [query]".into()))?,
                            kind,
                        )?
                    }
                    other => scalar(other, kind)?,
                };
                Ok(Query::MatchPhrase { field, query })
            }
            "multi_match" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| DslError("[multi_match] must be an object".into()))?;
                only_keys(o, &["query", "fields", "type", "operator"], kind)?;
                let query = scalar(
                    o.get("query")
                        .ok_or_else(|| DslError("[multi_match] requires [query]".into()))?,
                    kind,
                )?;
                let fields = o
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| DslError("[multi_match] requires [fields], a list".into()))?;
                self.spend(fields.len())?;
                let operator = parse_operator(o.get("operator"))?;
                let phrase = match o.get("type").and_then(Value::as_str).unwrap_or("best_fields") {
                    "best_fields" | "most_fields" => false,
                    "phrase" => true,
                    other => return err(format!("[multi_match] type [{other}] is not supported")),
                };
                let mut should = Vec::new();
                for f in fields {
                    let f = f
                        .as_str()
                        .ok_or_else(|| DslError("[multi_match] fields must be strings".into()))?;
                    // `field^2` boosts change scores only; the sort here is by id.
                    let f = check_field(f.split('^').next().unwrap_or(f), kind)?;
                    should.push(if phrase {
                        Query::MatchPhrase {
                            field: f,
                            query: query.clone(),
                        }
                    } else {
                        Query::Match {
                            field: f,
                            query: query.clone(),
                            operator,
                        }
                    });
                }
                Ok(bool_should(should))
            }
            "term" => {
                let (field, q) = single_entry(body, kind)?;
                let field = check_field(field, kind)?;
                let value = match q {
                    Value::Object(o) => {
                        only_keys(o, &["value"], kind)?;
                        scalar(
                            o.get("value")
                                .ok_or_else(|| DslError("[term] requires [value]".into()))?,
                            kind,
                        )?
                    }
                    other => scalar(other, kind)?,
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
                let field = check_field(field, kind)?;
                let list = list
                    .as_array()
                    .ok_or_else(|| DslError("[terms] values must be a list (terms lookup is not supported)".into()))?;
                self.spend(list.len())?;
                let values = list.iter().map(|v| scalar(v, kind)).collect::<Result<_, _>>()?;
                Ok(Query::Terms { field, values })
            }
            "range" => {
                let (field, q) = single_entry(body, kind)?;
                let field = check_field(field, kind)?;
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
                    let s = scalar(v, kind)?;
                    lower = if incl("include_lower") {
                        Bound::Included(s)
                    } else {
                        Bound::Excluded(s)
                    };
                }
                if let Some(v) = o.get("to").filter(|v| !v.is_null()) {
                    let s = scalar(v, kind)?;
                    upper = if incl("include_upper") {
                        Bound::Included(s)
                    } else {
                        Bound::Excluded(s)
                    };
                }
                for (k, v) in o {
                    let s = || scalar(v, kind);
                    match k.as_str() {
                        "gt" => lower = Bound::Excluded(s()?),
                        "gte" => lower = Bound::Included(s()?),
                        "lt" => upper = Bound::Excluded(s()?),
                        "lte" => upper = Bound::Included(s()?),
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
                    field: check_field(f, kind)?,
                })
            }
            "prefix" | "wildcard" => {
                let (field, q) = single_entry(body, kind)?;
                let field = check_field(field, kind)?;
                let value = match q {
                    Value::Object(o) => {
                        only_keys(o, &["value", "wildcard"], kind)?;
                        string(
                            o.get("value")
                                .or_else(|| o.get("wildcard"))
                                .ok_or_else(|| DslError(format!("[{kind}] requires [value]")))?,
                            kind,
                        )?
                    }
                    other => string(other, kind)?,
                };
                if value.chars().count() > 256 {
                    return err(format!("[{kind}] value longer than 256 characters"));
                }
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
                self.spend(list.len())?;
                let values = list.iter().map(|v| string(v, kind)).collect::<Result<_, _>>()?;
                Ok(Query::Ids { values })
            }
            "query_string" => self.query_string(body),
            other => err(format!("query type [{other}] is not supported")),
        }
    }

    fn match_with_msm(&mut self, m: Query, msm: MinimumShouldMatch) -> Result<Query, DslError> {
        // `minimum_should_match` on a match counts its tokens: one match per token.
        let Query::Match { field, query, .. } = m else {
            return Ok(m);
        };
        let tokens = super::fields::analyze(&query.as_text());
        if !field.ends_with(super::fields::TEXT_SUFFIX) || tokens.len() <= 1 {
            return Ok(Query::Match {
                field,
                query,
                operator: Operator::Or,
            });
        }
        self.spend(tokens.len())?;
        let should = tokens
            .into_iter()
            .map(|t| Query::Match {
                field: field.clone(),
                query: Scalar::Str(t),
                operator: Operator::Or,
            })
            .collect();
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
                default_fields.push(check_field(f, "query_string")?);
            }
        }
        let op = parse_operator(o.get("default_operator"))?;
        let tokens = qs::lex(text)?;
        self.spend(tokens.len())?;
        let mut p = qs::QsParser {
            tokens,
            pos: 0,
            default_fields,
            op,
        };
        let q = p.expr(0)?;
        if p.pos < p.tokens.len() {
            return err(format!("[query_string] unexpected {:?}", p.tokens[p.pos]));
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

    pub fn lex(s: &str) -> Result<Vec<Tok>, DslError> {
        let chars: Vec<char> = s.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let special = |c: char| c.is_whitespace() || "()\":[]{}".contains(c);
        while i < chars.len() {
            let c = chars[i];
            match c {
                c if c.is_whitespace() => i += 1,
                '(' => {
                    out.push(Tok::Open);
                    i += 1
                }
                ')' => {
                    out.push(Tok::Close);
                    i += 1
                }
                ':' => {
                    out.push(Tok::Colon);
                    i += 1
                }
                '+' => {
                    out.push(Tok::Plus);
                    i += 1
                }
                '-' | '!' => {
                    out.push(Tok::Not);
                    i += 1
                }
                '"' => {
                    let mut buf = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return err("[query_string] unterminated quote"),
                            Some('"') => break,
                            Some('\\') if i + 1 < chars.len() => {
                                buf.push(chars[i + 1]);
                                i += 2;
                                continue;
                            }
                            Some(&ch) => buf.push(ch),
                        }
                        i += 1;
                    }
                    i += 1;
                    out.push(Tok::Phrase(buf));
                }
                '[' | '{' => {
                    let close = chars[i..]
                        .iter()
                        .position(|&ch| ch == ']' || ch == '}')
                        .ok_or_else(|| DslError("[query_string] unterminated range".into()))?;
                    let inner: String = chars[i + 1..i + close].iter().collect();
                    let parts: Vec<&str> = inner.split(" TO ").collect();
                    if parts.len() != 2 {
                        return err(format!("[query_string] range [{inner}] must be [a TO b]"));
                    }
                    out.push(Tok::Range(
                        parts[0].trim().to_string(),
                        parts[1].trim().to_string(),
                        c == '[',
                        chars[i + close] == ']',
                    ));
                    i += close + 1;
                }
                ']' | '}' => return err("[query_string] unbalanced range bracket"),
                _ => {
                    let mut buf = String::new();
                    while i < chars.len() && !special(chars[i]) {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            buf.push(chars[i + 1]);
                            i += 2;
                            continue;
                        }
                        buf.push(chars[i]);
                        i += 1;
                    }
                    out.push(match buf.as_str() {
                        "AND" | "&&" => Tok::And,
                        "OR" | "||" => Tok::Or,
                        "NOT" => Tok::Not,
                        _ => Tok::Word(buf),
                    });
                }
            }
        }
        Ok(out)
    }

    pub struct QsParser {
        pub tokens: Vec<Tok>,
        pub pos: usize,
        pub default_fields: Vec<String>,
        pub op: Operator,
    }

    impl QsParser {
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
                    let field = check_field(&w, "query_string")?;
                    if field == "_exists_" {
                        return match self.tokens.get(self.pos).cloned() {
                            Some(Tok::Word(f)) => {
                                self.pos += 1;
                                Ok(Query::Exists {
                                    field: check_field(&f, "query_string")?,
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
                    Ok(value_query(&field, v))
                }
                Some(Tok::Word(_)) | Some(Tok::Phrase(_)) | Some(Tok::Range(..)) => {
                    let v = self.value()?;
                    if self.default_fields.is_empty() {
                        return err("[query_string] a term without a field needs default_field or fields \
                             (searching every field is not supported)");
                    }
                    let qs: Vec<Query> = self.default_fields.iter().map(|f| value_query(f, v.clone())).collect();
                    Ok(if qs.len() == 1 {
                        qs.into_iter().next().unwrap_or(Query::MatchNone)
                    } else {
                        bool_should(qs)
                    })
                }
                Some(t) => err(format!("[query_string] unexpected {t:?}")),
                None => err("[query_string] unexpected end of query"),
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

    fn value_query(field: &str, v: Tok) -> Query {
        let field = field.to_string();
        match v {
            Tok::Phrase(p) => Query::MatchPhrase {
                field,
                query: Scalar::Str(p),
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
    fn minimum_should_match() {
        assert_eq!(MinimumShouldMatch::Count(2).resolve(3), 2);
        assert_eq!(MinimumShouldMatch::Count(-1).resolve(3), 2);
        assert_eq!(MinimumShouldMatch::Percent(50.0).resolve(3), 1);
        assert_eq!(MinimumShouldMatch::Percent(-25.0).resolve(4), 3);
        assert_eq!(MinimumShouldMatch::Count(9).resolve(3), 3);
    }
}
