//! Where writes hand over the work that must follow them. The backend implements
//! [`JobSink`] with its durable job queue; the edge writes nothing and has none.

use super::ingest::IngestJob;
use crate::model::{BoxFuture, MaybeSend, MaybeSync};
use serde::{Deserialize, Serialize};

/// Durable hand-over of work to the job queue. Each method is durable before its future
/// resolves.
pub trait JobSink: MaybeSend + MaybeSync {
    /// Record the work that must follow a successful write of `key` to `replica` (every
    /// write of a [`super::Bucket`] calls this, and nothing else does), made by `origin`:
    /// which work that is, is decided in one place by the implementation.
    fn after_write<'a>(&'a self, replica: &'a str, key: &'a str, origin: Origin) -> BoxFuture<'a, Result<(), String>>;
    /// What replication is doing, per replica pair (`GET /internal/replication`), as JSON.
    fn replication_status(&self) -> BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async { Err("this server keeps no job queue".to_string()) })
    }
    /// Record durably that a blob is to be copied to the replica's checkout bucket (a
    /// download waits for it, or its copy is ageing); a queued copy of the same blob
    /// absorbs a repeat.
    fn submit_copy_out(&self, job: super::checkout::CopyOutJob) -> BoxFuture<'_, Result<(), String>>;
    /// The id of the shared checkout ([`super::checkout::CheckoutJob::shared`]) of bundle
    /// `uuid` at `version` in `replica` that is queued or running, if any.
    fn pending_checkout<'a>(
        &'a self,
        _replica: &'a str,
        _uuid: &'a str,
        _version: &'a str,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }
    /// How many checkouts are queued or running (counted up to `limit`).
    fn checkouts_pending(&self, _limit: usize) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }
    /// Why the latest copy of blob `blob_key` to `replica`'s checkout bucket failed for
    /// good, if it did.
    fn copy_out_failed<'a>(&'a self, _replica: &'a str, _blob_key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }
    /// Record a checkout durably; a worker runs it.
    fn submit_checkout(&self, job: super::checkout::CheckoutJob) -> BoxFuture<'_, Result<(), String>>;
    /// Record `job` durably; a worker (of any backend sharing the queue) runs it.
    fn submit_ingest(&self, job: IngestJob) -> BoxFuture<'_, Result<(), String>>;
    /// How the latest ingest of `files/{uuid}.{version}` into `replica` failed for good,
    /// if it did (cleared when that file is submitted again).
    fn ingest_failure<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Option<JobFailure>>;
}

/// Who made a write: what follows it depends on that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A client (an API request or its ingest): the write is copied to every other replica.
    Client,
    /// Replication from another replica: indexed here, never copied on (every replica gets
    /// its copy from the replica the client wrote to).
    Replication,
}

/// The error a background ingest ended with, kept to answer `HEAD`/`GET` for its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    /// HTTP status of the error.
    pub status: u16,
    /// DSS error code.
    pub code: String,
    /// Message.
    pub title: String,
}
