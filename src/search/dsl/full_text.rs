//! Full-text queries: `match`, `match_phrase`, `multi_match` (lowered to `bool` of `match`es).

use super::*;

impl Parser<'_> {
    /// `"match"`.
    pub(super) fn parse_match(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"match_phrase"`.
    pub(super) fn parse_match_phrase(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"multi_match"`.
    pub(super) fn parse_multi_match(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `minimum_should_match` on a match counts its tokens: one match per token.
    pub(super) fn match_with_msm(
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
}
