//! The backend's side of collections: which collections each owner has, kept beside the
//! job queue ([`super::queue::registry::Registry`]).

use super::queue::registry::Registry;
use super::queue::AnyQueue;
use crate::model::BoxFuture;
use std::sync::Arc;

/// The backend's [`crate::model::collection::CollectionOwners`]: the owner index beside
/// the job queue.
pub struct CollectionIndex {
    queue: Arc<AnyQueue>,
}

impl CollectionIndex {
    /// Over `queue`.
    pub fn new(queue: Arc<AnyQueue>) -> Self {
        CollectionIndex { queue }
    }
}

impl crate::model::collection::CollectionOwners for CollectionIndex {
    fn add<'a>(&'a self, owner: &'a str, uuid: &'a str, version: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.queue
                .add_collection(owner, uuid, version)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn claim<'a>(&'a self, uuid: &'a str, owner: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.queue
                .claim_collection(uuid, owner)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn list<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<Vec<(String, String)>, String>> {
        Box::pin(async move { self.queue.owner_collections(owner).await.map_err(|e| e.to_string()) })
    }
    fn remove<'a>(&'a self, uuid: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.queue
                .remove_collection(uuid)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}
