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

mod compound;
mod full_text;
mod query_string;
mod term_level;

use compound::bool_should;

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
            "match_all" | "match_none" => self.parse_match_all(kind, body),
            "bool" => self.bool(body, depth),
            "constant_score" => self.parse_constant_score(kind, body, depth),
            "match" => self.parse_match(kind, body),
            "match_phrase" => self.parse_match_phrase(kind, body),
            "multi_match" => self.parse_multi_match(kind, body),
            "term" => self.parse_term(kind, body),
            "terms" => self.parse_terms(kind, body),
            "range" => self.parse_range(kind, body),
            "exists" => self.parse_exists(kind, body),
            "prefix" | "wildcard" => self.parse_prefix(kind, body),
            "ids" => self.parse_ids(kind, body),
            "query_string" => self.query_string(body),
            other => err(format!("query type [{other}] is not supported")),
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
        use super::query_string::qs::{self, Tok::*};
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
