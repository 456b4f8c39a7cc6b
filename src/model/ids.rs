//! Object identifiers: UUIDs as the original DSS accepts them, and DSS_VERSION timestamps.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use std::fmt;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not of the form `8-4-4-4-12` alphanumerics.
    #[error("'{0}' is not a valid uuid")]
    Uuid(String),
    /// Not a timestamp at all.
    #[error("version should be an RFC3339 compliant timestamp")]
    VersionNotTimestamp,
    /// A timestamp, but not in the exact DSS_VERSION form.
    #[error("version should be a DSS_VERSION with the format 'YYYY-MM-DDTHHmmSS.zzzzzzZ'")]
    VersionNotCanonical,
}

/// A lowercase object UUID. The original's pattern is alphanumeric, not hex-only
/// (`[A-Za-z0-9]{8}-…-[A-Za-z0-9]{12}`); input is lowercased as its handlers did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectUuid(String);

impl ObjectUuid {
    /// Validate and lowercase `s`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let groups = [8usize, 4, 4, 4, 12];
        let mut parts = s.split('-');
        for len in groups {
            match parts.next() {
                Some(p) if p.len() == len && p.bytes().all(|b| b.is_ascii_alphanumeric()) => {}
                _ => return Err(IdError::Uuid(s.to_string())),
            }
        }
        if parts.next().is_some() {
            return Err(IdError::Uuid(s.to_string()));
        }
        Ok(ObjectUuid(s.to_ascii_lowercase()))
    }

    /// A fresh random (v4) UUID.
    pub fn random() -> Self {
        ObjectUuid(uuid::Uuid::new_v4().to_string())
    }

    /// The canonical (lowercase) text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const VERSION_FORMAT: &str = "%Y-%m-%dT%H%M%S%.6fZ";

/// A DSS_VERSION: `2017-06-16T193604.240704Z`, UTC with microseconds.
///
/// Accepted only if it round-trips exactly through parse and format, as the
/// original's `is_DSS_VERSION` required. Lexicographic order is time order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DssVersion(String);

impl DssVersion {
    /// Parse and check the round-trip rule.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        // Cheap shape check first: the storage regex `\d{4}-\d{2}-\d{2}T\d{6}[.]\d{6}Z`.
        let b = s.as_bytes();
        let shape_ok = b.len() == 25
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                17 => *c == b'.',
                24 => *c == b'Z',
                _ => c.is_ascii_digit(),
            });
        if !shape_ok {
            // Distinguish "not a timestamp" from "timestamp in another form", as the original did.
            if DateTime::parse_from_rfc3339(s).is_ok() {
                return Err(IdError::VersionNotCanonical);
            }
            return Err(IdError::VersionNotTimestamp);
        }
        // Fixed-width digits: valid calendar fields are exactly what round-trips through
        // parse and strftime (checked without the formatter: this runs on every request).
        let num = |a: usize, b: usize| s[a..b].parse::<u32>().unwrap_or(u32::MAX);
        let date = NaiveDate::from_ymd_opt(num(0, 4) as i32, num(5, 7), num(8, 10));
        let time = NaiveTime::from_hms_micro_opt(num(11, 13), num(13, 15), num(15, 17), num(18, 24));
        // chrono accepts second 60 (leap seconds) only via the nanosecond field, and
        // rejects 60 in `from_hms_micro_opt`, as Python does.
        // Year 0 is no date to Python (datetime.MINYEAR is 1): the original refused it.
        if date.is_none() || time.is_none() || num(0, 4) == 0 {
            return Err(IdError::VersionNotTimestamp);
        }
        Ok(DssVersion(s.to_string()))
    }

    /// The version for a moment in time.
    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        DssVersion(t.format(VERSION_FORMAT).to_string())
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The moment it names.
    pub fn datetime(&self) -> DateTime<Utc> {
        // Checked by `parse` (or made by `from_datetime`), so it reads back.
        chrono::NaiveDateTime::parse_from_str(&self.0, VERSION_FORMAT)
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }
}

impl fmt::Display for DssVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True if `s` has the storage shape of a version (used when parsing keys, where
/// the original matched with a regex rather than the round-trip rule).
pub fn looks_like_version(s: &str) -> bool {
    DssVersion::parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_version_names_its_moment() {
        let v = DssVersion::parse("2017-06-16T193604.240704Z").unwrap();
        let t = v.datetime();
        assert_eq!(t.to_rfc3339(), "2017-06-16T19:36:04.240704+00:00");
        assert_eq!(DssVersion::from_datetime(t), v);
    }

    #[test]
    fn version_round_trip() {
        let v = DssVersion::parse("2017-06-16T193604.240704Z").unwrap();
        assert_eq!(v.as_str(), "2017-06-16T193604.240704Z");
        for bad in [
            "2017-06-16T19:36:04.240704Z",
            "2017-06-16T193604.240704",
            "2017-06-16T193604Z",
            "2017-13-16T193604.240704Z",
            "2017-02-30T193604.240704Z",
            "2017-06-16T246004.240704Z",
            "9000",
            "",
            "2017-06-16T193604.2407041Z",
            "0000-01-01T000000.000000Z",
        ] {
            assert!(DssVersion::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            DssVersion::parse("2017-06-16T19:36:04.240704Z"),
            Err(IdError::VersionNotCanonical)
        );
        assert_eq!(DssVersion::parse("9000"), Err(IdError::VersionNotTimestamp));
        assert!(DssVersion::parse("0001-01-01T000000.000000Z").is_ok());
        let t = Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(DssVersion::from_datetime(t).as_str(), "2020-01-02T030405.000000Z");
    }

    #[test]
    fn uuid_rules() {
        let u = ObjectUuid::parse("CE55FD51-7833-469b-be0b-5da88ebebfcd").unwrap();
        assert_eq!(u.as_str(), "ce55fd51-7833-469b-be0b-5da88ebebfcd");
        assert!(ObjectUuid::parse("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz").is_ok());
        for bad in [
            "",
            "ce55fd51-7833-469b-be0b",
            "ce55fd51-7833-469b-be0b-5da88ebebfcd-1",
            "ce55fd5_-7833-469b-be0b-5da88ebebfcd",
            "../../../../etc/passwd",
        ] {
            assert!(ObjectUuid::parse(bad).is_err(), "{bad}");
        }
    }
}
