//! The event journal's pure parts: what an event is, how journals are cut, and how a
//! listing of entries becomes the event streams `GET /v1/events` answers with.
//!
//! An **event** is a bundle version's metadata document (the one subscriptions v2 match
//! on), with id `{uuid}.{version}` and the time the journal recorded it. A **journal** is
//! an object holding the documents of one or more events back to back (no separators);
//! its manifest says where each starts and how long it is. A listing answers with
//! **streams**: the runs of consecutive events (in time order) that lie in one journal,
//! each with the journal's URL and the offsets to cut it at.

use super::{BoxFuture, DssVersion, MaybeSend, MaybeSync};
use serde::{Deserialize, Serialize};

/// Most events a compacted journal holds (the original's scribe made journals of 1000).
pub const JOURNAL_MAX_EVENTS: usize = 1000;
/// Most bytes a compacted journal holds (one large document still gets a journal).
pub const JOURNAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// How long a journal nothing names any more is kept, when the stream URLs handed out
/// live `url_ttl` (`DSS_PRESIGNED_URL_TTL`): their life, and a margin for clocks.
pub fn grace(url_ttl: std::time::Duration) -> std::time::Duration {
    url_ttl + url_ttl.min(std::time::Duration::from_secs(60))
}
/// Most streams on one page of `GET /v1/events` (the original's bound).
pub const PER_PAGE_MAX: usize = 10;

/// One event as the journal's index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    /// `{uuid}.{version}` of the bundle.
    pub event_id: String,
    /// When the journal recorded it (a DSS_VERSION; text order is time order).
    pub timestamp: String,
    /// The journal holding its document.
    pub journal: String,
    /// Where its document starts in the journal.
    pub offset: u64,
    /// Its document's length in bytes.
    pub size: u64,
    /// The journal's length in bytes.
    pub journal_size: u64,
}

/// An event's place in the journal's order: `(timestamp, event_id)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Timestamp (DSS_VERSION).
    pub timestamp: String,
    /// Event id (empty: before every event of that time).
    pub event_id: String,
}

impl Cursor {
    /// Before every event recorded at or after `timestamp`.
    pub fn at(timestamp: &str) -> Self {
        Cursor {
            timestamp: timestamp.to_string(),
            event_id: String::new(),
        }
    }

    /// The page token naming this place: `{timestamp}~{event_id}` (only URL-safe
    /// characters: both parts are DSS_VERSIONs, uuids and dots).
    pub fn token(&self) -> String {
        format!("{}~{}", self.timestamp, self.event_id)
    }

    /// A token made by [`Cursor::token`]; `None` for anything else.
    pub fn from_token(token: &str) -> Option<Self> {
        let (ts, id) = token.split_once('~')?;
        DssVersion::parse(ts).ok()?;
        if !id.is_empty() {
            parse_event_id(id)?;
        }
        Some(Cursor {
            timestamp: ts.to_string(),
            event_id: id.to_string(),
        })
    }
}

/// The event id of bundle `uuid` at `version`.
pub fn event_id(uuid: &str, version: &str) -> String {
    format!("{uuid}.{version}")
}

/// `(uuid, version)` of an event id; `None` unless it is a lower-case uuid, a dot and a
/// DSS_VERSION.
pub fn parse_event_id(id: &str) -> Option<(&str, &str)> {
    let (uuid, version) = id.split_at_checked(36)?;
    let version = version.strip_prefix('.')?;
    super::ObjectUuid::parse(uuid).ok()?;
    if uuid.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    DssVersion::parse(version).ok()?;
    Some((uuid, version))
}

/// A date bound of a listing: a DSS_VERSION (`2026-12-01T135520.000000Z`, the
/// original's form), an RFC 3339 time, or a day (`2026-12-01`, its midnight UTC), as the
/// DSS_VERSION compared with timestamps; `None` for anything else.
pub fn parse_date(s: &str) -> Option<String> {
    if DssVersion::parse(s).is_ok() {
        return Some(s.to_string());
    }
    let t = match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(_) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?
            .and_utc(),
    };
    // Only what is a DSS_VERSION in UTC (years 1 to 9999), so that text order is time
    // order (`+10000-…` would sort before every date).
    let v = DssVersion::from_datetime(t).to_string();
    DssVersion::parse(&v).is_ok().then_some(v)
}

/// One event of a stream, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// `{uuid}.{version}`.
    pub event_id: String,
    /// When it was recorded.
    pub timestamp: String,
    /// Where its document starts in the stream object.
    pub offset: u64,
    /// Its document's length.
    pub size: u64,
}

/// A stream as `GET /v1/events` lists it (the URL is added by the handler), and a
/// journal's manifest as stored beside it (then `events` lists every event it holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// The journal the events are in.
    pub journal_id: String,
    /// Timestamp of the first event listed.
    pub from_date: String,
    /// Timestamp of the last event listed.
    pub to_date: String,
    /// Length of the journal object in bytes.
    pub size: u64,
    /// The events, in order.
    pub events: Vec<StreamEvent>,
}

/// One page of streams: at most `per_page`, and where the next page starts if there is
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The streams.
    pub streams: Vec<Stream>,
    /// The first event of the next page.
    pub next: Option<Cursor>,
}

/// The most entries a page of `per_page` streams can need: one more stream than shown
/// (to know there is a next page), each of at most [`JOURNAL_MAX_EVENTS`] events.
pub fn entries_for(per_page: usize) -> usize {
    (per_page + 1) * JOURNAL_MAX_EVENTS
}

/// How many entries to read next for a page of `per_page` streams after `read` were not
/// enough (`0`: none read yet): as many as streams at first (enough when each is one
/// event, as before compaction), then sixteen times more, up to [`entries_for`].
pub fn entries_next(per_page: usize, read: usize) -> usize {
    let first = per_page + 1;
    if read == 0 {
        first
    } else {
        (read * 16).min(entries_for(per_page))
    }
}

/// `entries` (in journal order) cut into streams, the first `per_page` of them.
pub fn page(entries: Vec<EventEntry>, per_page: usize) -> Page {
    let mut streams: Vec<Stream> = Vec::new();
    for e in entries {
        let event = StreamEvent {
            event_id: e.event_id,
            timestamp: e.timestamp,
            offset: e.offset,
            size: e.size,
        };
        match streams.last_mut() {
            Some(s) if s.journal_id == e.journal => {
                s.to_date.clone_from(&event.timestamp);
                s.events.push(event);
            }
            _ => {
                if streams.len() == per_page {
                    return Page {
                        streams,
                        next: Some(Cursor {
                            timestamp: event.timestamp,
                            event_id: event.event_id,
                        }),
                    };
                }
                streams.push(Stream {
                    journal_id: e.journal,
                    from_date: event.timestamp.clone(),
                    to_date: event.timestamp.clone(),
                    size: e.journal_size,
                    events: vec![event],
                });
            }
        }
    }
    Page { streams, next: None }
}

/// `pending` (in journal order) cut into the journals compaction writes: runs of at most
/// [`JOURNAL_MAX_EVENTS`] events and [`JOURNAL_MAX_BYTES`] bytes (a larger document gets
/// one of its own).
pub fn cut(pending: Vec<EventEntry>) -> Vec<Vec<EventEntry>> {
    let mut out: Vec<Vec<EventEntry>> = Vec::new();
    let mut bytes = 0u64;
    for e in pending {
        let fits = out
            .last()
            .is_some_and(|j| j.len() < JOURNAL_MAX_EVENTS && bytes + e.size <= JOURNAL_MAX_BYTES);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += e.size;
        if let Some(j) = out.last_mut() {
            j.push(e);
        }
    }
    out
}

/// Whether a journal compaction writes of `events` is complete: full by count, or by
/// bytes past half the limit. Its events are never packed again (unless some are
/// deleted); those of a smaller journal stay pending, to be merged with later ones, so a
/// trickle of events does not leave a journal per compaction.
pub fn sealed(events: &[EventEntry]) -> bool {
    events.len() >= JOURNAL_MAX_EVENTS || events.iter().map(|e| e.size).sum::<u64>() >= JOURNAL_MAX_BYTES / 2
}

/// Whether packing `events` would only write again what one journal holds: all of one
/// journal's bytes, nothing else (an open journal with nothing new, or a lone one-event
/// journal).
pub fn unchanged(events: &[EventEntry]) -> bool {
    let Some(first) = events.first() else { return true };
    events.iter().all(|e| e.journal == first.journal)
        && events.iter().map(|e| e.size).sum::<u64>() == first.journal_size
}

/// The manifest of a journal holding `docs` (each `(event_id, timestamp, length)`, in
/// order), back to back.
pub fn manifest(journal_id: &str, docs: &[(String, String, u64)]) -> Stream {
    let mut offset = 0;
    let events: Vec<StreamEvent> = docs
        .iter()
        .map(|(id, ts, size)| {
            let e = StreamEvent {
                event_id: id.clone(),
                timestamp: ts.clone(),
                offset,
                size: *size,
            };
            offset += size;
            e
        })
        .collect();
    Stream {
        journal_id: journal_id.to_string(),
        from_date: events.first().map(|e| e.timestamp.clone()).unwrap_or_default(),
        to_date: events.last().map(|e| e.timestamp.clone()).unwrap_or_default(),
        size: offset,
        events,
    }
}

/// The id of a compacted journal of events from `from` to `to` (timestamps): readable,
/// and unique by its random part (two compactions never write over each other).
pub fn journal_id(from: &str, to: &str) -> String {
    format!("{from}--{to}--{}", uuid::Uuid::new_v4().simple())
}

/// The index of the journal, as the API reads it (the backend keeps it beside the job
/// queue; the edge forwards the event routes).
pub trait EventJournal: MaybeSend + MaybeSync {
    /// Up to `limit` live events of `replica` from `from` (inclusive) to timestamp `to`
    /// (exclusive), in journal order.
    fn entries<'a>(
        &'a self,
        replica: &'a str,
        from: &'a Cursor,
        to: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<EventEntry>, String>>;
    /// The live event `event_id` of `replica`.
    fn entry<'a>(&'a self, replica: &'a str, event_id: &'a str) -> BoxFuture<'a, Result<Option<EventEntry>, String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32, journal: &str, offset: u64) -> EventEntry {
        EventEntry {
            event_id: format!("00000000-0000-4000-8000-{n:012}.2026-12-01T000000.000000Z"),
            timestamp: format!("2026-12-01T0000{n:02}.000000Z"),
            journal: journal.to_string(),
            offset,
            size: 10,
            journal_size: 100,
        }
    }

    #[test]
    fn consecutive_events_of_a_journal_are_one_stream() {
        let rows = vec![
            entry(1, "a", 0),
            entry(2, "a", 10),
            entry(3, "b", 0),
            entry(4, "a", 20),
            entry(5, "c", 0),
        ];
        let p = page(rows.clone(), 10);
        let ids: Vec<(&str, usize)> = p
            .streams
            .iter()
            .map(|s| (s.journal_id.as_str(), s.events.len()))
            .collect();
        assert_eq!(ids, [("a", 2), ("b", 1), ("a", 1), ("c", 1)]);
        assert_eq!(p.streams[0].from_date, rows[0].timestamp);
        assert_eq!(p.streams[0].to_date, rows[1].timestamp);
        assert_eq!(p.streams[2].events[0].offset, 20);
        assert!(p.next.is_none());
        let p = page(rows.clone(), 2);
        assert_eq!(p.streams.len(), 2);
        let next = p.next.unwrap();
        assert_eq!(
            (next.timestamp, next.event_id),
            (rows[3].timestamp.clone(), rows[3].event_id.clone())
        );
    }

    #[test]
    fn reads_grow_until_a_page_is_sure() {
        let mut read = 0;
        let mut steps = Vec::new();
        while read < entries_for(10) {
            read = entries_next(10, read);
            steps.push(read);
        }
        assert_eq!(steps, [11, 176, 2816, 11000]);
    }

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        let c = Cursor {
            timestamp: "2026-12-01T000001.000000Z".into(),
            event_id: entry(1, "a", 0).event_id,
        };
        assert_eq!(Cursor::from_token(&c.token()), Some(c));
        for bad in [
            "",
            "x",
            "2026-12-01T000001.000000Z",
            "2026-12-01~x",
            "2026-12-01T000001.000000Z~../x",
        ] {
            assert_eq!(Cursor::from_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_in_three_forms() {
        assert_eq!(parse_date("2026-12-01").as_deref(), Some("2026-12-01T000000.000000Z"));
        assert_eq!(
            parse_date("2026-12-01T10:00:00+01:00").as_deref(),
            Some("2026-12-01T090000.000000Z")
        );
        assert_eq!(
            parse_date("2026-12-01T135520.123456Z").as_deref(),
            Some("2026-12-01T135520.123456Z")
        );
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("9999-12-31T23:59:59-01:00"), None, "year 10000 in UTC");
        assert_eq!(parse_date("0001-01-01T00:00:00+01:00"), None, "year 0 in UTC");
        assert_eq!(parse_date("2026-13-01"), None);
    }

    #[test]
    fn journals_are_cut_by_count_and_bytes() {
        let many: Vec<EventEntry> = (0..2500).map(|n| entry(n % 60, "x", 0)).collect();
        let cuts: Vec<usize> = cut(many).iter().map(Vec::len).collect();
        assert_eq!(cuts, [1000, 1000, 500]);
        let mut big = entry(1, "x", 0);
        big.size = JOURNAL_MAX_BYTES;
        let cuts: Vec<usize> = cut(vec![entry(0, "x", 0), big, entry(2, "x", 0)])
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(cuts, [1, 1, 1]);
    }

    #[test]
    fn journals_are_sealed_when_full_and_left_alone_when_unchanged() {
        let full: Vec<EventEntry> = (0..1000).map(|n| entry(n % 60, "x", 0)).collect();
        assert!(sealed(&full));
        assert!(!sealed(&full[..999]));
        let mut big = entry(1, "x", 0);
        big.size = JOURNAL_MAX_BYTES / 2;
        assert!(sealed(&[big]));
        // One journal of 100 bytes: all ten of its events is the journal as it is.
        let whole: Vec<EventEntry> = (0..10).map(|n| entry(n, "j", u64::from(n) * 10)).collect();
        assert!(unchanged(&whole));
        assert!(!unchanged(&whole[1..]), "a journal that lost an event");
        let mut mixed = whole.clone();
        mixed.push(entry(11, "k", 0));
        assert!(!unchanged(&mixed));
    }

    #[test]
    fn a_manifest_places_documents_back_to_back() {
        let m = manifest("j", &[("a".into(), "t1".into(), 5), ("b".into(), "t2".into(), 7)]);
        assert_eq!(m.size, 12);
        assert_eq!((m.events[1].offset, m.events[1].size), (5, 7));
        assert_eq!((m.from_date.as_str(), m.to_date.as_str()), ("t1", "t2"));
    }
}
