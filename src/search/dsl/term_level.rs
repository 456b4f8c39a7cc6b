//! Term-level queries: `term`, `terms`, `range`, `exists`, `prefix`, `wildcard`, `ids`.

use super::*;

impl Parser<'_> {
    /// `"term"`.
    pub(super) fn parse_term(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"terms"`.
    pub(super) fn parse_terms(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"range"`.
    pub(super) fn parse_range(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"exists"`.
    pub(super) fn parse_exists(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"prefix" | "wildcard"`.
    pub(super) fn parse_prefix(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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

    /// `"ids"`.
    pub(super) fn parse_ids(&mut self, kind: &str, body: &Value) -> Result<Query, DslError> {
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
}
