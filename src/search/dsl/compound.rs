//! Compound queries: `bool`, `constant_score`, and the trivial `match_all` / `match_none`.

use super::*;

impl Parser<'_> {
    /// `"match_all" | "match_none"`.
    pub(super) fn parse_match_all(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"constant_score"`.
    pub(super) fn parse_constant_score(&mut self, kind: &str, body: &Value, depth: usize) -> Result<Query, DslError> {
        let o = body
            .as_object()
            .ok_or_else(|| DslError("[constant_score] must be an object".into()))?;
        only_keys(o, &["filter"], kind)?;
        let f = o
            .get("filter")
            .ok_or_else(|| DslError("[constant_score] requires [filter]".into()))?;
        self.query(f, depth + 1)
    }

    pub(super) fn clauses(&mut self, v: Option<&Value>, depth: usize, what: &str) -> Result<Vec<Query>, DslError> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|q| self.query(q, depth + 1)).collect(),
            Some(o @ Value::Object(_)) => Ok(vec![self.query(o, depth + 1)?]),
            Some(_) => err(format!("[bool] {what} must be a query or a list of queries")),
        }
    }

    pub(super) fn bool(&mut self, body: &Value, depth: usize) -> Result<Query, DslError> {
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
}

pub(super) fn bool_should(should: Vec<Query>) -> Query {
    Query::Bool {
        must: vec![],
        should,
        must_not: vec![],
        filter: vec![],
        minimum_should_match: None,
    }
}
