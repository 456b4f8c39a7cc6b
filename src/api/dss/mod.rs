//! The DSS v1 API (`/v1/…`, described by `schema/dss-api.json`): its handlers. Its
//! errors are [`crate::api::ApiError`], rendered as the DSS problem JSON through
//! [`crate::api::error::RenderError`]; another API (GA4GH DRS) gets a module beside this
//! one with an error type of its own, rendered through the same trait. The route table
//! (`crate::api::routes`) has authenticated the caller and checked the body before any
//! handler here runs.

pub mod bundles;
pub mod checkout;
pub mod collections;
pub mod events;
pub mod files;
pub mod search;
pub mod subscriptions;
