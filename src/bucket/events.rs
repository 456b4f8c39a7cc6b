//! The event journal's objects in a replica's bucket: `events/streams/{journal}` holds
//! the documents of a journal's events back to back, `events/journals/{journal}` its
//! manifest (the same JSON a listing shows, with every event). A new event is a journal
//! of its own named by its event id, with no manifest (one object per event recorded: the
//! index says the rest). Journals are written whole and never changed: compaction writes
//! new ones and deletes the old after a grace time.
//! No work follows these writes (they are not replicated: every replica records its own).

use super::keys::{event_manifest_key, event_stream_key};
use super::{Bucket, BucketError, FileDoc};
use crate::model::event::{manifest, Stream};
use crate::storage::{ByteRange, PresignOptions, PutOptions, Store};
use bytes::Bytes;

/// A journal's events as written: `(event_id, timestamp, document)`, in order.
pub type JournalDocs = [(String, String, Bytes)];

impl<S: Store, F: FileDoc> Bucket<'_, S, F> {
    /// Write the one-event journal of event `event_id`: its document alone, at
    /// `events/streams/{event_id}`.
    pub async fn put_event(&self, event_id: &str, doc: Bytes) -> Result<(), BucketError> {
        Ok(self
            .store
            .put(&event_stream_key(event_id), doc, PutOptions::overwrite())
            .await?)
    }

    /// Write journal `journal_id` of `docs`: the stream first, then its manifest (a
    /// manifest never names a stream that is not there). Returns the manifest.
    pub async fn put_journal(&self, journal_id: &str, docs: &JournalDocs) -> Result<Stream, BucketError> {
        let placed: Vec<(String, String, u64)> = docs
            .iter()
            .map(|(id, ts, d)| (id.clone(), ts.clone(), d.len() as u64))
            .collect();
        let m = manifest(journal_id, &placed);
        let mut stream = Vec::with_capacity(m.size as usize);
        for (_, _, d) in docs {
            stream.extend_from_slice(d);
        }
        let json = serde_json::to_vec(&m).map_err(|e| BucketError::Corrupt {
            key: event_manifest_key(journal_id),
            detail: e.to_string(),
        })?;
        let opts = |t: &str| PutOptions {
            content_type: Some(t.to_string()),
            ..PutOptions::overwrite()
        };
        self.store
            .put(
                &event_stream_key(journal_id),
                Bytes::from(stream),
                opts("application/octet-stream"),
            )
            .await?;
        self.store
            .put(
                &event_manifest_key(journal_id),
                Bytes::from(json),
                opts("application/json"),
            )
            .await?;
        Ok(m)
    }

    /// The whole stream of journal `journal_id`.
    pub async fn journal_stream(&self, journal_id: &str) -> Result<Bytes, BucketError> {
        Ok(self.store.get(&event_stream_key(journal_id)).await?)
    }

    /// The `size` bytes at `offset` of journal `journal_id`'s stream: one event's document.
    pub async fn journal_slice(&self, journal_id: &str, offset: u64, size: u64) -> Result<Bytes, BucketError> {
        use futures::StreamExt;
        if size == 0 {
            return Ok(Bytes::new());
        }
        let range = ByteRange::FromTo(offset, offset + size - 1);
        let (_, _, mut body) = self.store.get_range(&event_stream_key(journal_id), Some(range)).await?;
        let mut out = Vec::with_capacity(size as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BucketError::Store(e.into()))?;
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != size {
            return Err(BucketError::Corrupt {
                key: event_stream_key(journal_id),
                detail: format!("{} bytes where the index says {size}", out.len()),
            });
        }
        Ok(Bytes::from(out))
    }

    /// Delete journal `journal_id` (its manifest first, if it has one, so a manifest never
    /// names a missing stream).
    pub async fn delete_journal(&self, journal_id: &str) -> Result<(), BucketError> {
        self.store.delete(&event_manifest_key(journal_id)).await?;
        self.store.delete(&event_stream_key(journal_id)).await?;
        Ok(())
    }

    /// A URL that lets anyone holding it GET journal `journal_id`'s stream for `ttl`.
    pub async fn presign_journal(&self, journal_id: &str, ttl: std::time::Duration) -> Result<String, BucketError> {
        let opts = PresignOptions::default();
        Ok(self
            .store
            .presign_get(&event_stream_key(journal_id), ttl, &opts)
            .await?)
    }
}
