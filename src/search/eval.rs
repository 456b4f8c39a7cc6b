//! The query AST evaluated over one JSON document in memory, with the mapping's semantics
//! ([`super::fields`]). Used to match subscriptions against a new bundle, and as the
//! reference the search engines are tested against.
//!
//! Only a [`Checked`] query is evaluated: one whose clauses were charged to its request's
//! budget as tantivy charges them, so both refuse the same queries. The cost of one
//! evaluation is then linear in the query's clauses and the document's size: the
//! document's text is analysed once, in [`EvalDoc::new`], not once per clause.

use super::budget::OverBudget;
use super::dsl::{Operator, Query, Scalar, SearchBody};
use super::fields::{self, Leaf, TEXT_SUFFIX};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

/// A parsed query whose clauses are charged to its budget: ready to be evaluated over any
/// number of documents.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'q> {
    query: &'q Query,
}

impl<'q> Checked<'q> {
    /// Charge `body`'s clauses to its budget ([`super::budget::Budget::clauses`]).
    pub fn new(body: &'q mut SearchBody) -> Result<Self, OverBudget> {
        body.budget.clauses(&body.query)?;
        Ok(Checked { query: &body.query })
    }

    /// A stored body whose clauses were charged by [`Checked::new`] when it was loaded
    /// (a subscription's query), evaluated over many documents.
    pub fn stored(body: &'q SearchBody) -> Self {
        Checked { query: &body.query }
    }
}

/// A document prepared for evaluating many queries.
pub struct EvalDoc<'a> {
    id: Option<String>,
    by_path: HashMap<String, Vec<Leaf<'a>>>,
    /// The analysed values of each path with text: one token list per value.
    texts: HashMap<String, Vec<Vec<String>>>,
    exists: BTreeSet<String>,
}

impl<'a> EvalDoc<'a> {
    /// Prepare `doc`, whose `_id` is `id` (`{uuid}.{version}`) when known.
    pub fn new(doc: &'a Value, id: Option<&str>) -> Self {
        let mut by_path: HashMap<String, Vec<Leaf<'a>>> = HashMap::new();
        for (path, v) in fields::flatten(doc) {
            if let Some(leaf) = fields::classify(&path, v) {
                by_path.entry(path).or_default().push(leaf);
            }
        }
        let mut exists = fields::exists_paths(
            by_path
                .iter()
                .flat_map(|(p, ls)| ls.iter().map(move |l| (p.as_str(), l))),
        );
        if id.is_some() {
            exists.insert("_id".into());
        }
        let texts = by_path
            .iter()
            .filter_map(|(path, leaves)| {
                let values: Vec<Vec<String>> = leaves
                    .iter()
                    .filter_map(|l| match l {
                        Leaf::Str { text: Some(t), .. } => Some(fields::analyze(t)),
                        _ => None,
                    })
                    .collect();
                (!values.is_empty()).then(|| (path.clone(), values))
            })
            .collect();
        EvalDoc {
            id: id.map(str::to_string),
            by_path,
            texts,
            exists,
        }
    }

    fn leaves(&self, path: &str) -> &[Leaf<'a>] {
        self.by_path.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Keywords at `path` (including `_id`).
    fn keywords(&self, path: &str) -> Vec<&str> {
        if path == "_id" {
            return self.id.as_deref().into_iter().collect();
        }
        self.leaves(path)
            .iter()
            .filter_map(|l| match l {
                Leaf::Str { keyword: Some(k), .. } => Some(k.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The analysed values of `field` when it names a `.text` sub-field: one token list per value.
    fn text_values(&self, field: &str) -> &[Vec<String>] {
        field
            .strip_suffix(TEXT_SUFFIX)
            .and_then(|base| self.texts.get(base))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether `q` matches this document.
    pub fn matches(&self, q: &Checked<'_>) -> bool {
        self.eval(q.query)
    }

    fn eval(&self, q: &Query) -> bool {
        match q {
            Query::MatchAll => true,
            Query::MatchNone => false,
            Query::Bool {
                must,
                should,
                must_not,
                filter,
                minimum_should_match,
            } => {
                let need = Query::required_should(must.len(), filter.len(), should.len(), *minimum_should_match);
                must.iter().chain(filter).all(|c| self.eval(c))
                    && !must_not.iter().any(|c| self.eval(c))
                    && (need == 0 || should.iter().filter(|c| self.eval(c)).count() >= need)
            }
            Query::Term { field, value } => self.term(field, value),
            Query::Terms { field, values } => values.iter().any(|v| self.term(field, v)),
            Query::Match {
                field,
                query,
                operator,
                tokens: wanted,
            } => {
                if self.exact(field, query) {
                    return true;
                }
                if wanted.is_empty() {
                    return false;
                }
                let have: BTreeSet<&String> = self.text_values(field).iter().flatten().collect();
                match operator {
                    Operator::Or => wanted.iter().any(|t| have.contains(t)),
                    Operator::And => wanted.iter().all(|t| have.contains(t)),
                }
            }
            Query::MatchPhrase {
                field,
                query,
                tokens: wanted,
            } => {
                if self.exact(field, query) {
                    return true;
                }
                !wanted.is_empty()
                    && self
                        .text_values(field)
                        .iter()
                        .any(|toks| toks.windows(wanted.len()).any(|w| w == wanted.as_slice()))
            }
            Query::Range { field, lower, upper } => self.range(field, lower, upper),
            Query::Exists { field } => self.exists.contains(field.as_str()),
            Query::Prefix { field, value } => {
                let p = fields::normalize(field, value);
                let lower = value.to_lowercase();
                self.keywords(field).iter().any(|k| k.starts_with(&p))
                    || self.text_values(field).iter().flatten().any(|t| t.starts_with(&lower))
            }
            Query::Wildcard { field, pattern } => {
                let p = fields::normalize(field, pattern);
                let lower = pattern.to_lowercase();
                self.keywords(field).iter().any(|k| wildcard_match(&p, k))
                    || self
                        .text_values(field)
                        .iter()
                        .flatten()
                        .any(|t| wildcard_match(&lower, t))
            }
            Query::Ids { values } => self.id.as_ref().is_some_and(|id| values.iter().any(|v| v == id)),
        }
    }

    /// `term`: an exact value, or one token of a `.text` field equal to the value as written.
    fn term(&self, field: &str, value: &Scalar) -> bool {
        if self.exact(field, value) {
            return true;
        }
        let text = value.as_text();
        self.text_values(field).iter().flatten().any(|t| *t == text)
    }

    /// A value equal to `v` under one of the types `v` can be read as (not `.text`).
    fn exact(&self, field: &str, v: &Scalar) -> bool {
        let c = Candidates::of(field, v);
        if let Some(k) = &c.keyword {
            if self.keywords(field).iter().any(|x| x == k) {
                return true;
            }
        }
        self.leaves(field).iter().any(|l| match l {
            Leaf::Number(n) => c.number == Some(*n),
            Leaf::Date(d) => c.date == Some(*d),
            Leaf::Bool(b) => c.boolean == Some(*b),
            Leaf::Str { .. } => false,
        })
    }

    fn range(&self, field: &str, lower: &Bound<Scalar>, upper: &Bound<Scalar>) -> bool {
        let nums = (
            map_bound(lower, |s| Candidates::of(field, s).number),
            map_bound(upper, |s| Candidates::of(field, s).number),
        );
        let dates = (
            map_bound(lower, |s| Candidates::of(field, s).date),
            map_bound(upper, |s| Candidates::of(field, s).date),
        );
        let kws = (
            map_bound(lower, |s| Some(fields::normalize(field, &s.as_text()))),
            map_bound(upper, |s| Some(fields::normalize(field, &s.as_text()))),
        );
        fn within<T: PartialOrd>(b: &(Option<Bound<T>>, Option<Bound<T>>), x: &T) -> bool {
            let (Some(lo), Some(hi)) = b else {
                return false;
            };
            let lo_ok = match lo {
                Bound::Included(l) => x >= l,
                Bound::Excluded(l) => x > l,
                Bound::Unbounded => true,
            };
            let hi_ok = match hi {
                Bound::Included(h) => x <= h,
                Bound::Excluded(h) => x < h,
                Bound::Unbounded => true,
            };
            lo_ok && hi_ok
        }
        if self.keywords(field).iter().any(|k| within(&kws, &k.to_string())) {
            return true;
        }
        self.leaves(field).iter().any(|l| match l {
            Leaf::Number(n) => within(&nums, n),
            Leaf::Date(d) => within(&dates, d),
            _ => false,
        })
    }
}

/// A bound whose value cannot be read as the wanted type makes the whole range fail for
/// that type (`None`).
pub fn map_bound<T>(b: &Bound<Scalar>, f: impl Fn(&Scalar) -> Option<T>) -> Option<Bound<T>> {
    match b {
        Bound::Included(s) => f(s).map(Bound::Included),
        Bound::Excluded(s) => f(s).map(Bound::Excluded),
        Bound::Unbounded => Some(Bound::Unbounded),
    }
}

/// The typed readings of a query value at a field: as a keyword, a number, a date, a boolean.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// As a normalized keyword.
    pub keyword: Option<String>,
    /// As a number.
    pub number: Option<f64>,
    /// As a date (epoch milliseconds).
    pub date: Option<i64>,
    /// As a boolean.
    pub boolean: Option<bool>,
}

impl Candidates {
    /// Read `v` for `field`.
    pub fn of(field: &str, v: &Scalar) -> Self {
        let exact = fields::is_exact_keyword(field);
        match v {
            Scalar::Str(s) => Candidates {
                keyword: fields::keyword(field, s),
                number: if exact { None } else { fields::parse_number(s) },
                date: if exact { None } else { fields::parse_date_value(s) },
                boolean: match s.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                },
            },
            Scalar::Num(n) => Candidates {
                keyword: fields::keyword(field, &fields::format_number(*n)),
                number: Some(*n),
                // A number given for a date is epoch milliseconds.
                date: (n.fract() == 0.0 && n.abs() < 9.0e15).then_some(*n as i64),
                boolean: None,
            },
            Scalar::Bool(b) => Candidates {
                keyword: fields::keyword(field, &b.to_string()),
                number: None,
                date: None,
                boolean: Some(*b),
            },
        }
    }
}

/// `*` (any run) and `?` (one character) against the whole of `s`.
pub fn wildcard_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether `body`'s query matches `doc` (with `_id` `id`), its clauses charged to its budget.
pub fn matches(body: &mut SearchBody, doc: &Value, id: Option<&str>) -> Result<bool, OverBudget> {
    let q = Checked::new(body)?;
    Ok(EvalDoc::new(doc, id).matches(&q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::dsl::parse_query;
    use serde_json::json;

    fn m(q: Value, doc: &Value) -> bool {
        matches(&mut parse_query(&q).unwrap(), doc, Some("u.v")).unwrap()
    }

    #[test]
    fn semantics_of_the_mapping() {
        let doc = json!({
            "uuid": "abc", "admin_deleted": true,
            "f": {"name": "Homo Sapiens", "n": [9606, 2.5], "d": "2018-07-22T23:38:35.835Z", "long": "x".repeat(300)},
            "g": [{"text": "Brain tissue"}],
        });
        assert!(m(json!({"match": {"f.name": "homo sapiens"}}), &doc));
        assert!(!m(json!({"match": {"f.name": "homo"}}), &doc), "keywords match whole");
        assert!(m(json!({"match": {"f.name.text": "homo"}}), &doc));
        assert!(m(
            json!({"match": {"f.name.text": {"query": "homo x", "operator": "or"}}}),
            &doc
        ));
        assert!(!m(
            json!({"match": {"f.name.text": {"query": "homo x", "operator": "and"}}}),
            &doc
        ));
        assert!(m(json!({"match_phrase": {"f.name.text": "Homo sapiens"}}), &doc));
        assert!(!m(json!({"match_phrase": {"f.name.text": "sapiens homo"}}), &doc));
        assert!(
            m(json!({"term": {"f.name": "HOMO SAPIENS"}}), &doc),
            "normalizer applies"
        );
        assert!(m(json!({"term": {"admin_deleted": true}}), &doc));
        assert!(m(json!({"term": {"admin_deleted": "true"}}), &doc));
        assert!(m(json!({"term": {"f.n": "9606"}}), &doc));
        assert!(m(json!({"range": {"f.n": {"gt": 9000}}}), &doc));
        assert!(m(json!({"range": {"f.n": {"lt": 3}}}), &doc));
        assert!(!m(json!({"range": {"f.n": {"gt": 3, "lt": 9000}}}), &doc));
        assert!(m(
            json!({"range": {"f.d": {"gte": "2018-07-01", "lt": "2018-08"}}}),
            &doc
        ));
        assert!(!m(json!({"range": {"f.d": {"gte": "2019"}}}), &doc));
        assert!(m(json!({"range": {"f.name": {"gte": "homo", "lte": "hz"}}}), &doc));
        assert!(m(json!({"exists": {"field": "f"}}), &doc));
        assert!(m(json!({"exists": {"field": "f.long"}}), &doc));
        assert!(
            !m(json!({"exists": {"field": "f.d.text"}}), &doc),
            "dates have no .text"
        );
        assert!(!m(json!({"term": {"f.long": "x".repeat(300)}}), &doc), "ignore_above");
        assert!(m(json!({"prefix": {"f.name": "Homo s"}}), &doc));
        assert!(m(json!({"wildcard": {"f.name": "h*s?piens"}}), &doc));
        assert!(
            m(json!({"match": {"g.text": "brain tissue"}}), &doc),
            "a key named text"
        );
        assert!(m(json!({"match": {"g.text.text": "brain"}}), &doc));
        assert!(m(json!({"ids": {"values": ["x", "u.v"]}}), &doc));
        assert!(m(json!({"terms": {"_id": ["u.v"]}}), &doc));
        assert!(m(json!({"term": {"uuid": "abc"}}), &doc));
        assert!(!m(json!({"term": {"uuid": "ABC"}}), &doc), "uuid is case-sensitive");
        assert!(m(json!({"bool": {"must_not": [{"term": {"uuid": "x"}}]}}), &doc));
        assert!(!m(json!({"bool": {"should": [{"term": {"uuid": "x"}}]}}), &doc));
        assert!(m(
            json!({"bool": {"must": [{"match_all": {}}], "should": [{"term": {"uuid": "x"}}]}}),
            &doc
        ));
        assert!(!m(
            json!({"bool": {"should": [{"term": {"uuid": "abc"}}, {"term": {"uuid": "x"}}], "minimum_should_match": 2}}),
            &doc
        ));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*b*", "abc"));
        assert!(!wildcard_match(&"a*".repeat(50), &"a".repeat(49)));
    }
}
