//! `query_string`: the subset of Lucene syntax the original's users send, lexed and
//! lowered to the core queries.

use super::*;

impl Parser<'_> {
    pub(super) fn query_string(&mut self, body: &Value) -> Result<Query, DslError> {
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

/// The common subset of Lucene's query syntax: `field:value`, `field:"a phrase"`,
/// `field:pre*`, `field:[a TO b]` / `{a TO b}`, `_exists_:field`, `AND`/`OR`/`NOT`,
/// `+`/`-`, parentheses.
pub(super) mod qs {
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
