//! The work one search may make the server do, charged to one [`Budget`] per request.
//!
//! A query is small on the wire and large in memory when it is copied or split: a
//! `query_string` of 2,000 `fields` × 500 words (23 KB) becomes a million clauses, a `match`
//! of a million words a million term lookups. So every such step is charged *before* it
//! allocates, and the request is refused (400 `elasticsearch_bad_request`, the title naming
//! the limit) as soon as one count passes its limit:
//!
//! | count | limit | charged by |
//! |---|---|---|
//! | JSON values of the request body | [`MAX_JSON_VALUES`] | the route, before the body is parsed |
//! | query nodes | [`MAX_NODES`] | the parser: each query object, each `terms`/`ids` value |
//! | tokens | [`MAX_TOKENS`] | the parser: each token lexed out of a `query_string`, each token analysed out of a `match`/`match_phrase`/`multi_match` value, counted while splitting |
//! | expansions | [`MAX_EXPANSIONS`] | the parser, for each clause it copies (a term to each of several fields, a `match` to one clause per token); then the engines, for each term clause a leaf becomes (typed readings, tokens) |
//! | bytes | [`MAX_QUERY_BYTES`] | the parser, for each string it copies into the query |
//!
//! The budget travels with the parsed query ([`super::dsl::SearchBody`]) to execution, where
//! tantivy's translation and the in-memory evaluator charge the same clauses through
//! [`Budget::clauses`], so the two accept and refuse the same queries.

use super::dsl::Query;
use super::eval::Candidates;
use super::fields::TEXT_SUFFIX;

/// Most JSON values (objects, arrays, strings, numbers, ...) a search request body may hold.
/// Far above any real query (4,096 nodes take about 20,000), far below what makes parsing
/// the body itself expensive (16 MiB of `[1,1,…]` would be 8 million values).
pub const MAX_JSON_VALUES: usize = 65_536;
/// Most query nodes: query objects and `terms`/`ids` values written in the request.
pub const MAX_NODES: usize = 4096;
/// Most tokens: lexed out of `query_string`s and analysed out of `match` values.
pub const MAX_TOKENS: usize = 4096;
/// Most clauses made out of the request: copies per field or per token made by lowering,
/// and the term clauses the engine runs for each leaf.
pub const MAX_EXPANSIONS: usize = 16_384;
/// Most bytes of field names and values the parsed query may hold, copies included.
pub const MAX_QUERY_BYTES: usize = 1024 * 1024;

/// Which limit a search passed. The message is the client's answer (no internals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// [`MAX_JSON_VALUES`].
    #[error("the request exceeds the limit of {MAX_JSON_VALUES} JSON values per search")]
    JsonValues,
    /// [`MAX_NODES`].
    #[error("the query exceeds the limit of {MAX_NODES} query nodes (clauses and values) per search")]
    Nodes,
    /// [`MAX_TOKENS`].
    #[error("the query exceeds the limit of {MAX_TOKENS} tokens per search")]
    Tokens,
    /// [`MAX_EXPANSIONS`].
    #[error("the query exceeds the limit of {MAX_EXPANSIONS} clauses per search (fields × terms)")]
    Expansions,
    /// [`MAX_QUERY_BYTES`].
    #[error("the query exceeds the limit of {MAX_QUERY_BYTES} bytes of query text per search")]
    Bytes,
}

/// What one search request has used so far of each limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    json_values: usize,
    nodes: usize,
    tokens: usize,
    expansions: usize,
    bytes: usize,
}

fn charge(used: &mut usize, n: usize, limit: usize, over: OverBudget) -> Result<(), OverBudget> {
    match used.checked_add(n) {
        Some(total) if total <= limit => {
            *used = total;
            Ok(())
        }
        _ => Err(over),
    }
}

impl Budget {
    /// A fresh budget, for one request.
    pub fn new() -> Self {
        Budget::default()
    }

    /// Charge `n` query nodes.
    pub fn nodes(&mut self, n: usize) -> Result<(), OverBudget> {
        charge(&mut self.nodes, n, MAX_NODES, OverBudget::Nodes)
    }

    /// Charge `n` tokens.
    pub fn tokens(&mut self, n: usize) -> Result<(), OverBudget> {
        charge(&mut self.tokens, n, MAX_TOKENS, OverBudget::Tokens)
    }

    /// Charge `n` clauses made out of the request.
    pub fn expansions(&mut self, n: usize) -> Result<(), OverBudget> {
        charge(&mut self.expansions, n, MAX_EXPANSIONS, OverBudget::Expansions)
    }

    /// Charge `n` bytes of text copied into the query.
    pub fn bytes(&mut self, n: usize) -> Result<(), OverBudget> {
        charge(&mut self.bytes, n, MAX_QUERY_BYTES, OverBudget::Bytes)
    }

    /// Charge the JSON values of a request body, counted in one pass over its bytes
    /// before it is parsed (each value starts the body or follows `[`, `,` or `:` outside
    /// strings; an empty array or object counts one too many, which is harmless).
    pub fn json_values(&mut self, body: &[u8]) -> Result<(), OverBudget> {
        let mut n = 1usize;
        let (mut in_string, mut escaped) = (false, false);
        for &b in body {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'[' | b',' | b':' => {
                        n += 1;
                        // Stop counting early: the body may be 16 MiB of commas.
                        if n > MAX_JSON_VALUES {
                            return Err(OverBudget::JsonValues);
                        }
                    }
                    _ => {}
                }
            }
        }
        charge(&mut self.json_values, n, MAX_JSON_VALUES, OverBudget::JsonValues)
    }

    /// The analysed tokens of `text` ([`super::fields::analyze`]), each charged as it is
    /// split off, so a value of a million words stops at the limit.
    pub fn analyze(&mut self, text: &str) -> Result<Vec<String>, OverBudget> {
        let mut out = Vec::new();
        for token in super::fields::tokens(text) {
            self.tokens(1)?;
            out.push(token);
        }
        Ok(out)
    }

    /// Charge the term clauses an engine runs for `q`: one per typed reading of each value
    /// (keyword, number, date, boolean), one per analysed token, one per bound type of a
    /// range, one per other leaf or `bool`. Both engines charge this before they build
    /// or evaluate anything, so they refuse exactly the same queries.
    pub fn clauses(&mut self, q: &Query) -> Result<(), OverBudget> {
        self.expansions(clause_count(q))
    }

    /// What has been used so far: JSON values, nodes, tokens, expansions, bytes (for logs).
    pub fn used(&self) -> [usize; 5] {
        [self.json_values, self.nodes, self.tokens, self.expansions, self.bytes]
    }
}

fn readings(field: &str, v: &super::dsl::Scalar) -> usize {
    let c = Candidates::of(field, v);
    let text = usize::from(field.ends_with(TEXT_SUFFIX));
    usize::from(c.keyword.is_some())
        + usize::from(c.number.is_some())
        + usize::from(c.date.is_some())
        + usize::from(c.boolean.is_some())
        + text
}

fn clause_count(q: &Query) -> usize {
    match q {
        Query::MatchAll | Query::MatchNone | Query::Exists { .. } => 1,
        Query::Bool {
            must,
            should,
            must_not,
            filter,
            ..
        } => must
            .iter()
            .chain(should)
            .chain(must_not)
            .chain(filter)
            .fold(1usize, |n, c| n.saturating_add(clause_count(c))),
        Query::Term { field, value } => readings(field, value),
        Query::Terms { field, values } => values.iter().map(|v| readings(field, v)).sum(),
        Query::Match {
            field, query, tokens, ..
        }
        | Query::MatchPhrase { field, query, tokens } => readings(field, query).saturating_add(tokens.len()),
        Query::Range { .. } => 3,
        Query::Prefix { field, .. } | Query::Wildcard { field, .. } => 1 + usize::from(field.ends_with(TEXT_SUFFIX)),
        Query::Ids { values } => values.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_reached_exactly_and_named() {
        let mut b = Budget::new();
        assert_eq!(b.nodes(MAX_NODES), Ok(()));
        assert_eq!(b.nodes(1), Err(OverBudget::Nodes));
        assert_eq!(b.tokens(usize::MAX), Err(OverBudget::Tokens), "no overflow");
        assert_eq!(b.expansions(MAX_EXPANSIONS + 1), Err(OverBudget::Expansions));
        assert_eq!(b.bytes(MAX_QUERY_BYTES), Ok(()));
        assert!(OverBudget::Expansions.to_string().contains("16384 clauses"));
    }

    #[test]
    fn json_values_are_counted_outside_strings_only() {
        let mut b = Budget::new();
        assert_eq!(b.json_values(br#"{"a": [1, 2, "x,y:[", "\"", 3]}"#), Ok(()));
        assert_eq!(b.used()[0], 7);
        let many = format!("[{}1]", "1,".repeat(MAX_JSON_VALUES));
        assert_eq!(Budget::new().json_values(many.as_bytes()), Err(OverBudget::JsonValues));
    }

    #[test]
    fn analysis_stops_at_the_token_limit() {
        let text = "word ".repeat(MAX_TOKENS + 1);
        assert_eq!(Budget::new().analyze(&text), Err(OverBudget::Tokens));
        assert_eq!(Budget::new().analyze(&text[5..]).map(|t| t.len()), Ok(MAX_TOKENS));
    }
}
