//! Notifications, as jobs (inventory §5, done durably):
//!
//! - a write of a bundle key queues a **match** job (`notify-match`, key
//!   `{replica}/{bundle key}`), so the write never waits on matching however many
//!   subscriptions there are. It reads the events the key stands for (a bundle created; a
//!   version tombstoned; for an unversioned tombstone, every version not tombstoned
//!   before), evaluates every subscription of the replica (v2: JMESPath over the
//!   original's metadata document; v1: the Elasticsearch query over the index document,
//!   with the in-memory evaluator), and queues one **notify** job per match carrying
//!   its payload. An event is matched once: a repeated write whose match completed
//!   before is not matched again.
//! - a notify job (`notify`, key `{replica}/{subscription}/{transaction id}`) makes one
//!   attempt per run: the request signed and encoded as the original's, sent through
//!   [`Webhooks`] (addresses checked after resolution, no redirects, no proxies, a
//!   timeout), its end logged in the subscription's delivery log; a failure is tried
//!   again after the next delay of `DSS_NOTIFY_DELAYS`, until they run out.

use super::queue::registry::Registry;
use super::queue::AnyQueue;
use crate::http::guard;
use crate::model::notification::{self as n, EventType, Expression};
use crate::model::subscription::{
    Delivery, Encoding, Kind, Outcome as DeliveryOutcome, Subscription, SubscriptionError, SubscriptionService,
    SUBSCRIPTION_LIMIT,
};
use crate::model::BoxFuture;
use crate::search::dsl::SearchBody;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Kind of the matching job; its key is `{replica}/{bundle key}`.
pub const MATCH: &str = "notify-match";
/// Kind of the delivery job; its key is `{replica}/{subscription}/{transaction id}#{attempt}`.
pub const NOTIFY: &str = "notify";

/// Longest wait for a callback's host to resolve when a subscription is made.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The original's schedule: 12 attempts over about a week.
pub const DEFAULT_DELAYS: &str = "0 60 600 3600 21600 60540 86400 86400 86400 86400 86400 86400";

/// Match the subscriptions of `replica` against the events of bundle key `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchJob {
    /// Where the key was written.
    pub replica: String,
    /// A bundle or tombstone key.
    pub key: String,
}

/// Deliver one notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyJob {
    /// The subscription's replica.
    pub replica: String,
    /// The subscription.
    pub subscription: String,
    /// The payload's `transaction_id` (the same for every attempt).
    pub id: String,
    /// What happened.
    pub event_type: EventType,
    /// The bundle.
    pub bundle_uuid: String,
    /// Its version.
    pub bundle_version: String,
    /// The payload, made when the event was matched.
    pub payload: Value,
    /// Which attempt this job makes (1 for the first): each failed attempt queues the
    /// next as a job of its own, so that only sends count.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

impl NotifyJob {
    /// The queue key.
    pub fn queue_key(&self) -> String {
        format!("{}/{}/{}#{}", self.replica, self.subscription, self.id, self.attempt)
    }
}

/// The namespace of notification ids ([`notification_id`]).
const NOTIFICATION_IDS: uuid::Uuid = uuid::Uuid::from_u128(0x6d1c_0f4e_3b2a_4c8d_9e7f_5a6b_1c2d_3e4f);

/// The `transaction_id` of the notification of `event` of bundle `uuid`.`version` in
/// `replica` to `subscription`: the same whenever that event is matched again (a
/// retried match job), so a receiver can tell a repeat.
fn notification_id(replica: &str, subscription: &str, event: EventType, uuid: &str, version: &str) -> String {
    let name = format!("{replica}/{subscription}/{}/{uuid}.{version}", event.as_str());
    uuid::Uuid::new_v5(&NOTIFICATION_IDS, name.as_bytes()).to_string()
}

/// How notifications are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    /// The delay before each attempt (the first usually 0).
    pub delays: Vec<Duration>,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Whether callbacks may use `http` and reach private addresses (tests, closed networks).
    pub allow_private: bool,
}

impl NotifySettings {
    /// From `DSS_NOTIFY_DELAYS` (seconds, space-separated), `DSS_NOTIFY_TIMEOUT` (seconds)
    /// and `DSS_NOTIFY_ALLOW_PRIVATE`.
    pub fn parse(delays: &str, timeout: f64, allow_private: bool) -> Result<Self, String> {
        let delays = delays
            .split_whitespace()
            .map(|d| {
                d.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 30.0 * 86400.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("DSS_NOTIFY_DELAYS: {d:?} is not a number of seconds"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("DSS_NOTIFY_DELAYS: at least one delay is needed".into());
        }
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 3600.0) {
            return Err("DSS_NOTIFY_TIMEOUT: a number of seconds up to 3600".into());
        }
        Ok(NotifySettings {
            delays,
            timeout: Duration::from_secs_f64(timeout),
            allow_private,
        })
    }

    /// When the attempt after attempt `made` (1-based) is due, if one is left.
    pub fn next_after(&self, made: u32, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        let d = self.delays.get(usize::try_from(made).ok()?)?;
        Some(now + chrono::Duration::from_std(*d).unwrap_or_default())
    }
}

/// Resolves names for webhooks and refuses those that lead to an address callbacks may
/// not reach, so that the address checked is the address connected to.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_checked(&host, 0, allow).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Every address `host` resolves to, unless one of them may not be called.
async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("the callback host {host} does not resolve"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("the callback host {host} does not resolve").into());
    }
    for a in &addrs {
        guard::check_address(a.ip(), allow_private)?;
    }
    Ok(addrs)
}

/// What an attempt came to.
#[derive(Debug)]
pub enum Sent {
    /// The receiver answered with this status.
    Answered(u16),
    /// No answer: the error.
    Failed(String),
}

/// The webhook client: one connection pool; names resolved through the guard; no
/// redirects followed; no proxies (they would resolve names unchecked).
pub struct Webhooks {
    client: reqwest::Client,
    settings: NotifySettings,
}

impl Webhooks {
    /// A client with `settings`.
    pub fn new(settings: NotifySettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Webhooks { client, settings })
    }

    /// The settings.
    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// Whether notifications may go to `url` (scheme, and every address of its host).
    pub async fn check(&self, url: &str) -> Result<(), String> {
        let t = guard::check_url(url, self.settings.allow_private)?;
        if t.ip.is_none() {
            // A resolver that does not answer must not hold the request for long.
            let resolved = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                resolve_checked(&t.host, t.port, self.settings.allow_private),
            )
            .await
            .map_err(|_| format!("the callback host {} did not resolve in time", t.host))?;
            resolved.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// One attempt (`attempt`, 1-based) to deliver `job` to `sub`.
    pub async fn send(&self, sub: &Subscription, job: &NotifyJob, attempt: u32) -> Sent {
        if let Err(e) = guard::check_url(sub.callback_url(), self.settings.allow_private) {
            return Sent::Failed(e);
        }
        let boundary = uuid::Uuid::new_v4().simple().to_string();
        let fields = sub.form_fields();
        let multipart = match sub.encoding() {
            Encoding::Json => None,
            Encoding::Multipart => Some((fields.as_slice(), sub.payload_form_field())),
        };
        let (content_type, body) = n::encode_body(&job.payload, multipart, &boundary);
        let method = match sub.method() {
            "PUT" => reqwest::Method::PUT,
            _ => reqwest::Method::POST,
        };
        let mut req = self
            .client
            .request(method, sub.callback_url())
            .header("Content-Type", content_type)
            // The original's header counted its queues from 0.
            .header("X-dss-notify-attempt", attempt.saturating_sub(1).to_string());
        if let Some((key, key_id)) = sub.hmac() {
            let date = n::http_date(chrono::Utc::now());
            let digest = n::digest(&body);
            req = req
                .header("Authorization", n::authorization(&key, &key_id, &date, &digest))
                .header("Date", date)
                .header("Digest", digest);
        }
        match req.body(body).send().await {
            Ok(resp) => Sent::Answered(resp.status().as_u16()),
            Err(e) => Sent::Failed(describe(&e)),
        }
    }
}

/// A transport error in words a subscriber can act on (no internals of ours).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    if e.is_timeout() {
        return "no answer within DSS_NOTIFY_TIMEOUT".into();
    }
    let mut s = if e.is_connect() {
        "could not connect".to_string()
    } else {
        "the exchange failed".to_string()
    };
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if text.contains("refused") || text.contains("resolve") {
            s = format!("{s}: {text}");
            break;
        }
        source = inner.source();
    }
    s
}

/// The subscriptions of one replica, compiled once per generation.
pub struct Compiled {
    generation: i64,
    v2: Vec<(Subscription, Option<Expression>, Option<n::Attachments>)>,
    v1: Vec<(Subscription, SearchBody, Option<n::Attachments>)>,
}

impl Compiled {
    fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.v2.is_empty()
    }

    /// What to read for an event, or `None` when there are no subscriptions.
    pub fn needs(&self) -> Option<Needs> {
        (!self.is_empty()).then_some(Needs {
            metadata: !self.v2.is_empty(),
            index: !self.v1.is_empty(),
        })
    }

    fn of(generation: i64, subs: Vec<Subscription>) -> Self {
        let mut c = Compiled {
            generation,
            v2: Vec::new(),
            v1: Vec::new(),
        };
        for s in subs {
            match s.kind {
                Kind::Jmespath => {
                    // Checked at PUT; one that no longer compiles matches nothing.
                    match s.jmespath_query().map(n::compile).transpose() {
                        Ok(q) => {
                            let a = s.attachments().map(n::Attachments::compile);
                            c.v2.push((s, q, a))
                        }
                        Err(e) => tracing::warn!(subscription = %s.uuid, "query does not compile, skipped: {e}"),
                    }
                }
                Kind::Elasticsearch => {
                    let mut body = s.es_query().and_then(|q| crate::search::dsl::parse_body(q).ok());
                    let charged = body
                        .as_mut()
                        .is_some_and(|b| crate::search::eval::Checked::new(b).is_ok());
                    match body {
                        Some(body) if charged => {
                            let a = s.attachments().map(n::Attachments::compile);
                            c.v1.push((s, body, a))
                        }
                        _ => tracing::warn!(subscription = %s.uuid, "es_query cannot be evaluated, skipped"),
                    }
                }
            }
        }
        c
    }
}

/// Notification work of one backend: the webhook client, the compiled subscriptions,
/// and the slots that bound how many deliveries run at once.
pub struct Notifier {
    webhooks: Arc<Webhooks>,
    compiled: Mutex<HashMap<String, Arc<Compiled>>>,
    slots: tokio::sync::Semaphore,
}

impl Notifier {
    /// Over `webhooks`, with at most `concurrent` deliveries at once (so that slow
    /// receivers never hold every job worker).
    pub fn new(webhooks: Arc<Webhooks>, concurrent: usize) -> Self {
        Notifier {
            webhooks,
            compiled: Mutex::new(HashMap::new()),
            slots: tokio::sync::Semaphore::new(concurrent.max(1)),
        }
    }

    /// The webhook client.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// `replica`'s subscriptions, compiled, reloaded when their generation changed.
    pub async fn subscriptions(&self, queue: &AnyQueue, replica: &str) -> Result<Arc<Compiled>, String> {
        let generation = queue
            .subscriptions_generation(replica)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(c) = self.lock().get(replica).filter(|c| c.generation == generation) {
            return Ok(c.clone());
        }
        let (generation, subs) = queue.replica_subscriptions(replica).await.map_err(|e| e.to_string())?;
        let compiled = Arc::new(Compiled::of(generation, subs));
        self.lock().insert(replica.to_string(), compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Compiled>>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One event of a bundle, with the documents subscriptions are matched against.
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The bundle.
    pub uuid: String,
    /// Its version.
    pub version: String,
    /// The original's metadata document (v2), when JMESPath subscriptions exist.
    pub metadata: Option<Value>,
    /// The index document (v1), when Elasticsearch subscriptions exist.
    pub index: Option<Value>,
}

/// The notifications `event` causes among `replica`'s compiled subscriptions: the jobs,
/// each with its payload. `api` is the public URL of this deployment.
fn matches(
    compiled: &Compiled,
    replica: &str,
    event: &Event,
    api: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<NotifyJob> {
    let mut out = Vec::new();
    let timestamp = crate::model::DssVersion::from_datetime(now).as_str().to_string();
    let job = |sub: &Subscription, payload: Value, id: String| NotifyJob {
        replica: replica.to_string(),
        subscription: sub.uuid.clone(),
        id,
        event_type: event.kind,
        bundle_uuid: event.uuid.clone(),
        bundle_version: event.version.clone(),
        payload,
        attempt: 1,
    };
    let id_of = |sub: &Subscription| notification_id(replica, &sub.uuid, event.kind, &event.uuid, &event.version);
    if let Some(doc) = &event.metadata {
        let prepared = n::prepare(doc);
        for (sub, q, defs) in &compiled.v2 {
            if !n::jmespath_matches(q.as_ref(), &prepared) {
                continue;
            }
            let id = id_of(sub);
            // Attachments go with creates only (the original's rule).
            let attachments = defs
                .as_ref()
                .filter(|_| event.kind == EventType::Create)
                .map(|defs| defs.select(&prepared));
            let payload = n::payload_v2(
                api,
                &sub.uuid,
                event.kind,
                (&event.uuid, &event.version),
                &timestamp,
                &id,
                sub.jmespath_query(),
                attachments,
            );
            out.push(job(sub, payload, id));
        }
    }
    if let Some(doc) = &event.index {
        let fqid = format!("{}.{}", event.uuid, event.version);
        let eval = crate::search::eval::EvalDoc::new(doc, Some(&fqid));
        let mut prepared = None;
        for (sub, body, defs) in &compiled.v1 {
            if !eval.matches(&crate::search::eval::Checked::stored(body)) {
                continue;
            }
            let id = id_of(sub);
            let attachments = defs
                .as_ref()
                .map(|defs| defs.select(prepared.get_or_insert_with(|| n::prepare(doc))));
            let es_query = sub.es_query().cloned().unwrap_or(Value::Null);
            let payload = n::payload_v1(&id, &sub.uuid, &es_query, (&event.uuid, &event.version), attachments);
            out.push(job(sub, payload, id));
        }
    }
    out
}

/// Which documents an event needs, given the compiled subscriptions.
pub struct Needs {
    /// The metadata document (JMESPath subscriptions exist).
    pub metadata: bool,
    /// The index document (Elasticsearch subscriptions exist).
    pub index: bool,
}

impl Notifier {
    /// The notifications of `event` in `replica` among `compiled`, each with its payload,
    /// found off the async workers (matching is CPU work: thousands of queries).
    pub async fn notifications(
        &self,
        compiled: Arc<Compiled>,
        replica: &str,
        event: Event,
        api: &str,
    ) -> Result<Vec<NotifyJob>, String> {
        let (replica, api) = (replica.to_string(), api.to_string());
        tokio::task::spawn_blocking(move || matches(&compiled, &replica, &event, &api, chrono::Utc::now()))
            .await
            .map_err(|e| format!("matching stopped: {e}"))
    }

    /// One attempt at `job`: sent, logged, and after a failure the next attempt queued
    /// (at the schedule's next delay) or the notification given up.
    pub async fn deliver(&self, queue: &AnyQueue, job: &NotifyJob) -> super::queue::runner::Outcome {
        use super::queue::runner::Outcome;
        use super::queue::JobQueue;
        let attempt = job.attempt;
        let sub = match queue.get_subscription(&job.replica, &job.subscription).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::info!(subscription = %job.subscription, "subscription deleted: notification dropped");
                return Outcome::Done;
            }
            Err(super::queue::QueueError::Corrupt(e)) => return Outcome::Fail(e),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        // Busy: try again in a moment, which is not an attempt (the slot bounds how many
        // workers slow receivers can hold).
        let Ok(_slot) = self.slots.try_acquire() else {
            let wait = chrono::Duration::milliseconds(
                500 + i64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 1000),
            );
            return Outcome::RetryAt(chrono::Utc::now() + wait, "waiting for a delivery slot".into());
        };
        let started = std::time::Instant::now();
        let at = chrono::Utc::now();
        let sent = self.webhooks.send(&sub, job, attempt).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status_code, error) = match sent {
            Sent::Answered(code) if (200..300).contains(&code) => (Some(code), None),
            Sent::Answered(code) => (Some(code), Some(format!("the receiver answered {code}"))),
            Sent::Failed(e) => (None, Some(e)),
        };
        let next = error
            .as_ref()
            .and_then(|_| self.webhooks.settings.next_after(attempt, chrono::Utc::now()));
        let outcome = match (&error, next) {
            (None, _) => DeliveryOutcome::Delivered,
            (Some(_), Some(_)) => DeliveryOutcome::Retrying,
            (Some(_), None) => DeliveryOutcome::Failed,
        };
        let record = Delivery {
            notification_id: job.id.clone(),
            event_type: job.event_type.as_str().to_string(),
            bundle_uuid: job.bundle_uuid.clone(),
            bundle_version: job.bundle_version.clone(),
            attempt,
            time: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            status_code,
            error: error.clone(),
            outcome,
            next_attempt: next.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            duration_ms,
        };
        if let Err(e) = queue.record_delivery(&job.replica, &job.subscription, &record).await {
            tracing::warn!(subscription = %job.subscription, "delivery not logged: {e}");
        }
        match (error, next) {
            (None, _) => {
                tracing::info!(subscription = %job.subscription, notification = %job.id, status = ?status_code, "notification delivered");
                Outcome::Done
            }
            (Some(e), Some(at)) => {
                let next_job = NotifyJob {
                    attempt: attempt + 1,
                    ..job.clone()
                };
                let queued = super::work::Work::Notify(Box::new(next_job)).to_job();
                let queued = super::queue::NewJob {
                    run_at: Some(at),
                    ..queued
                };
                match queue.enqueue(vec![queued]).await {
                    Ok(_) => Outcome::Done,
                    // Not queued: this attempt runs again after a backoff.
                    Err(qe) => Outcome::Retry(format!("{e}; the next attempt could not be queued: {qe}")),
                }
            }
            (Some(e), None) => Outcome::Fail(format!("gave up after {attempt} attempts: {e}")),
        }
    }
}

/// The backend's [`SubscriptionService`]: subscriptions beside the job queue, callbacks
/// checked by the webhook client's rules.
pub struct Subscriptions {
    queue: Arc<AnyQueue>,
    webhooks: Arc<Webhooks>,
}

impl Subscriptions {
    /// Over `queue`, checking callbacks with `webhooks`.
    pub fn new(queue: Arc<AnyQueue>, webhooks: Arc<Webhooks>) -> Self {
        Subscriptions { queue, webhooks }
    }
}

fn unavailable(e: super::queue::QueueError) -> SubscriptionError {
    SubscriptionError::Unavailable(e.to_string())
}

impl SubscriptionService for Subscriptions {
    fn check_callback<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), SubscriptionError>> {
        Box::pin(async move { self.webhooks.check(url).await.map_err(SubscriptionError::CallbackUrl) })
    }

    fn put(&self, sub: Subscription) -> BoxFuture<'_, Result<(), SubscriptionError>> {
        Box::pin(async move {
            match self.queue.put_subscription(&sub, SUBSCRIPTION_LIMIT).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(SubscriptionError::Limit),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn get<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Subscription>, SubscriptionError>> {
        Box::pin(async move { self.queue.get_subscription(replica, uuid).await.map_err(unavailable) })
    }

    fn list<'a>(
        &'a self,
        replica: &'a str,
        owner: &'a str,
        kind: Kind,
    ) -> BoxFuture<'a, Result<Vec<Subscription>, SubscriptionError>> {
        Box::pin(async move {
            self.queue
                .owner_subscriptions(replica, owner, kind)
                .await
                .map_err(unavailable)
        })
    }

    fn delete<'a>(&'a self, replica: &'a str, uuid: &'a str) -> BoxFuture<'a, Result<bool, SubscriptionError>> {
        Box::pin(async move { self.queue.delete_subscription(replica, uuid).await.map_err(unavailable) })
    }

    fn deliveries<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, SubscriptionError>> {
        Box::pin(async move { self.queue.deliveries(replica, uuid).await.map_err(unavailable) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_original_and_ends() {
        let s = NotifySettings::parse(DEFAULT_DELAYS, 60.0, false).unwrap();
        assert_eq!(s.delays.len(), 12);
        let t0 = chrono::Utc::now();
        assert_eq!(s.next_after(1, t0), Some(t0 + chrono::Duration::seconds(60)));
        assert_eq!(s.next_after(11, t0), Some(t0 + chrono::Duration::seconds(86400)));
        assert_eq!(s.next_after(12, t0), None);
        assert!(NotifySettings::parse("", 60.0, false).is_err());
        assert!(NotifySettings::parse("0 x", 60.0, false).is_err());
        assert!(NotifySettings::parse("0 -1", 60.0, false).is_err());
        assert!(NotifySettings::parse("0", 0.0, false).is_err());
    }
}
