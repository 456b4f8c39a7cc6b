//! How the original's Elasticsearch mapping types the values of an index document
//! (`dss/index/es/mapping.json`), shared by every engine so they agree:
//!
//! - strings are `keyword`s lowercased by a normalizer and not indexed above 256
//!   characters, each with an analysed `.text` sub-field (standard analyzer);
//! - strings that look like dates (`yyyy-MM-dd HH:mm:ss`, `strict_date_optional_time`)
//!   become dates, with no `.text` sub-field;
//! - `uuid` and `manifest.version` are plain, case-sensitive keywords; so is `_id`;
//! - numbers and booleans are themselves.
//!
//! Elasticsearch fixes a field's type from the first document that has it; here each value
//! is typed on its own, and a query value is tried against every type it can be read as.

use serde_json::Value;

/// Keywords longer than this (in characters) are not indexed (`ignore_above`).
pub const IGNORE_ABOVE: usize = 256;
/// Longest token of the analysed `.text` sub-fields (the standard tokenizer's limit).
pub const MAX_TOKEN_CHARS: usize = 255;
/// The sub-field suffix of analysed text.
pub const TEXT_SUFFIX: &str = ".text";

/// Paths mapped as case-sensitive keywords, never dates, without a `.text` sub-field.
pub fn is_exact_keyword(path: &str) -> bool {
    matches!(path, "uuid" | "manifest.version" | "_id")
}

/// The indexed keyword of string `s` at `path`: lowercased (except on exact keyword
/// paths), and `None` above [`IGNORE_ABOVE`] characters.
pub fn keyword(path: &str, s: &str) -> Option<String> {
    if s.chars().count() > IGNORE_ABOVE {
        return None;
    }
    Some(normalize(path, s))
}

/// The keyword normalizer, without the length limit (for query bounds and patterns).
pub fn normalize(path: &str, s: &str) -> String {
    if is_exact_keyword(path) {
        s.to_string()
    } else {
        s.to_lowercase()
    }
}

/// The standard analyzer, approximated: words are runs of letters, digits and `_`, a `.`
/// or `'` between two word characters joins them (`5.2.1`, `don't`), tokens are
/// lowercased and split at [`MAX_TOKEN_CHARS`].
pub fn analyze(text: &str) -> Vec<String> {
    tokens(text).collect()
}

/// The tokens of [`analyze`], one at a time, so that a caller can count (and stop) while
/// splitting instead of after collecting: query text comes from requests.
pub fn tokens(text: &str) -> Tokens<'_> {
    Tokens {
        chars: text.chars().peekable(),
        carry: String::new(),
        carry_len: 0,
    }
}

/// The iterator of [`tokens`].
pub struct Tokens<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    /// The start of the next token, when a token was split at [`MAX_TOKEN_CHARS`].
    carry: String,
    carry_len: usize,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Iterator for Tokens<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut cur = std::mem::take(&mut self.carry);
        let mut len = std::mem::take(&mut self.carry_len);
        while let Some(c) = self.chars.next() {
            let joiner = (c == '.' || c == '\'') && len > 0 && self.chars.peek().is_some_and(|&n| is_word(n));
            if is_word(c) || joiner {
                if len == MAX_TOKEN_CHARS {
                    // A full token ends here; this character starts the next one.
                    self.carry.extend(c.to_lowercase());
                    self.carry_len = 1;
                    return Some(cur);
                }
                cur.extend(c.to_lowercase());
                len += 1;
            } else if len > 0 {
                return Some(cur);
            }
        }
        (len > 0).then_some(cur)
    }
}

fn digits(s: &str, n: usize) -> Option<i64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `yyyy[-MM[-dd]]`, with how many parts were given.
fn parse_ymd(s: &str) -> Option<(i64, i64, i64, usize)> {
    let mut parts = s.split('-');
    let y = digits(parts.next()?, 4)?;
    let (m, d, n) = match (parts.next(), parts.next()) {
        (None, _) => (1, 1, 1),
        (Some(m), None) => (digits(m, 2)?, 1, 2),
        (Some(m), Some(d)) => (digits(m, 2)?, digits(d, 2)?, 3),
    };
    if parts.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some((y, m, d, n))
}

/// `HH[:mm[:ss[.fraction]]]` then an optional `Z` or `±HH[:]mm`; milliseconds of the day
/// and the offset in minutes.
fn parse_time(s: &str) -> Option<(i64, i64)> {
    // Byte offsets below assume ASCII; anything else is not a time.
    if !s.is_ascii() {
        return None;
    }
    let (clock, offset) = if let Some(c) = s.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = s.rfind(['+', '-']) {
        let (c, o) = s.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let o = &o[1..];
        let (h, m) = match o.split_once(':') {
            Some((h, m)) => (digits(h, 2)?, digits(m, 2)?),
            None if o.len() == 4 => (digits(&o[..2], 2)?, digits(&o[2..], 2)?),
            None => (digits(o, 2)?, 0),
        };
        (c, sign * (h * 60 + m))
    } else {
        (s, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => (a, f),
        Some(_) => return None,
        None => (clock, ""),
    };
    let mut it = hms.split(':');
    let h = digits(it.next()?, 2)?;
    let m = it.next().map(|m| digits(m, 2)).unwrap_or(Some(0))?;
    let sec = it.next().map(|x| digits(x, 2)).unwrap_or(Some(0))?;
    if it.next().is_some() || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let millis = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}")[..3].parse::<i64>().ok()?
    };
    Some((((h * 60 + m) * 60 + sec) * 1000 + millis, offset))
}

fn parse_datetime(s: &str, allow_partial_date: bool) -> Option<i64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => match s.split_once(' ') {
            // `yyyy-MM-dd HH:mm:ss`, the original's first dynamic date format: seconds required.
            Some((d, t)) if t.len() == 8 && t.matches(':').count() == 2 => (d, Some(t)),
            Some(_) => return None,
            None => (s, None),
        },
    };
    let (y, m, d, parts) = parse_ymd(date)?;
    if parts < 3 && (!allow_partial_date || time.is_some()) {
        return None;
    }
    let (ms, offset) = match time {
        Some(t) => parse_time(t)?,
        None => (0, 0),
    };
    Some(days_from_civil(y, m, d) * 86_400_000 + ms - offset * 60_000)
}

/// A string value the mapping detects as a date (needs at least `yyyy-MM-dd`), as epoch
/// milliseconds.
pub fn detect_date(s: &str) -> Option<i64> {
    if s.len() < 10 || s.len() > 40 {
        return None;
    }
    parse_datetime(s, false)
}

/// A date given in a query (`yyyy`, `yyyy-MM` and the detected forms), as epoch milliseconds.
pub fn parse_date_value(s: &str) -> Option<i64> {
    if s.len() > 40 {
        return None;
    }
    parse_datetime(s.trim(), true)
}

/// A number given as a string in a query.
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f + 0.0)
}

/// A number as a keyword (as Elasticsearch would print it: `5`, `5.5`).
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A leaf value of an index document, typed as the mapping types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    /// A string: its keyword (`None` above `ignore_above`) and its text for `.text`.
    Str {
        /// The indexed keyword.
        keyword: Option<String>,
        /// The original string (analysed for `.text`; absent on exact keyword paths).
        text: Option<&'a str>,
    },
    /// A number.
    Number(f64),
    /// A date, epoch milliseconds.
    Date(i64),
    /// A boolean.
    Bool(bool),
}

/// Type one JSON leaf at `path` (`None` for `null` and containers).
pub fn classify<'a>(path: &str, v: &'a Value) -> Option<Leaf<'a>> {
    match v {
        Value::String(s) => {
            if is_exact_keyword(path) {
                return Some(Leaf::Str {
                    keyword: keyword(path, s),
                    text: None,
                });
            }
            if let Some(d) = detect_date(s) {
                return Some(Leaf::Date(d));
            }
            Some(Leaf::Str {
                keyword: keyword(path, s),
                text: Some(s),
            })
        }
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(|f| Leaf::Number(f + 0.0)),
        Value::Bool(b) => Some(Leaf::Bool(*b)),
        _ => None,
    }
}

/// Every leaf of `doc` with its dotted path, arrays flattened, as Elasticsearch sees an
/// object.
pub fn flatten(doc: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(path: &mut String, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(path, child, out);
                    path.truncate(len);
                }
            }
            Value::Array(a) => {
                for child in a {
                    walk(path, child, out);
                }
            }
            Value::Null => {}
            leaf => out.push((path.clone(), leaf)),
        }
    }
    let mut out = Vec::new();
    walk(&mut String::new(), doc, &mut out);
    out
}

/// The paths `exists` finds in a document with these leaves: each leaf path, its
/// ancestors (an object exists when one of its fields does), and `.text` of strings.
pub fn exists_paths<'a>(leaves: impl Iterator<Item = (&'a str, &'a Leaf<'a>)>) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (path, leaf) in leaves {
        if matches!(leaf, Leaf::Str { text: Some(_), .. }) {
            out.insert(format!("{path}{TEXT_SUFFIX}"));
        }
        let mut p = path;
        loop {
            if !out.insert(p.to_string()) {
                break;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }
    out
}

/// Tokens of the analysed text with their positions: one value's tokens are consecutive,
/// and values of one field are far apart, so a phrase never spans two values.
pub const POSITION_GAP: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn analyzer() {
        assert_eq!(analyze("Homo sapiens"), vec!["homo", "sapiens"]);
        assert_eq!(analyze("Q4_DEMO-donor_MGH30"), vec!["q4_demo", "donor_mgh30"]);
        assert_eq!(analyze("v5.2.1, don't."), vec!["v5.2.1", "don't"]);
        assert!(analyze(" -- ").is_empty());
    }

    /// The analyzer as it was first written (collecting every character first): the
    /// streaming one must split exactly as it did.
    fn analyze_collecting(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut cur = String::new();
        let mut cur_len = 0usize;
        for (i, &c) in chars.iter().enumerate() {
            let joiner = (c == '.' || c == '\'') && cur_len > 0 && chars.get(i + 1).is_some_and(|&n| is_word(n));
            if is_word(c) || joiner {
                if cur_len == MAX_TOKEN_CHARS {
                    tokens.push(std::mem::take(&mut cur));
                    cur_len = 0;
                }
                cur.extend(c.to_lowercase());
                cur_len += 1;
            } else if cur_len > 0 {
                tokens.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
        }
        if cur_len > 0 {
            tokens.push(cur);
        }
        tokens
    }

    #[test]
    fn streaming_analyzer_splits_as_before() {
        let long = "x".repeat(MAX_TOKEN_CHARS);
        for s in [
            String::new(),
            "Homo sapiens".into(),
            format!("{long}.a"),
            format!("{long}a.b c"),
            format!("{long}'s {long}{long}"),
            format!("{long}. a"),
            "İstanbul ÉCOLE don't 5.2.1. .a a. '".into(),
            "x".repeat(3 * MAX_TOKEN_CHARS + 7),
        ] {
            assert_eq!(analyze(&s), analyze_collecting(&s), "{s:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(detect_date("1970-01-01"), Some(0));
        assert_eq!(detect_date("2018-07-22T23:38:35.835Z"), Some(1_532_302_715_835));
        assert_eq!(detect_date("2018-07-22 23:38:35"), Some(1_532_302_715_000));
        assert_eq!(detect_date("2018-07-23T01:38:35.835+02:00"), Some(1_532_302_715_835));
        assert_eq!(
            detect_date("2017-06-16T193604.240704Z"),
            None,
            "DSS_VERSIONs are keywords"
        );
        assert_eq!(detect_date("2018"), None);
        assert_eq!(detect_date("2018-02-30"), None);
        assert_eq!(parse_date_value("2018"), detect_date("2018-01-01"));
        assert_eq!(parse_date_value("2018-07"), detect_date("2018-07-01"));
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "2018-01-01T12+1€",
            "2018-01-01T€",
            "2018-01-01 €€:€€:€",
            "2018-01-01T12:00:00.",
            "2018-01-01T12:00:00.1234567890Z",
            "9999-12-31T23:59:59.999-23:59",
            "0000-01-01",
            "-",
            "",
            "T",
            "2018-1-1",
            "٢٠١٨-٠١-٠١",
        ] {
            let _ = detect_date(s);
            let _ = parse_date_value(s);
            let _ = parse_number(s);
            let _ = analyze(s);
        }
        assert_eq!(parse_date_value("2018-01-01T12+1€"), None);
    }

    #[test]
    fn typing_and_flattening() {
        let doc = json!({"uuid": "ABC", "a": {"b": ["X y", 3, null, true], "d": "2018-01-01"}, "e": []});
        let leaves = flatten(&doc);
        let paths: Vec<&str> = leaves.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, vec!["uuid", "a.b", "a.b", "a.b", "a.d"]);
        assert_eq!(
            classify("uuid", &json!("ABC")),
            Some(Leaf::Str {
                keyword: Some("ABC".into()),
                text: None
            })
        );
        assert_eq!(
            classify("a.b", &json!("X y")),
            Some(Leaf::Str {
                keyword: Some("x y".into()),
                text: Some("X y")
            })
        );
        assert!(matches!(classify("a.d", &json!("2018-01-01")), Some(Leaf::Date(_))));
        let long = "x".repeat(300);
        assert!(matches!(
            classify("a", &json!(long)),
            Some(Leaf::Str { keyword: None, .. })
        ));
        assert_eq!(format_number(5.0), "5");
        assert_eq!(format_number(5.5), "5.5");
        assert_eq!(parse_number(" 9606 "), Some(9606.0));
        assert_eq!(parse_number("yes"), None);
    }
}
