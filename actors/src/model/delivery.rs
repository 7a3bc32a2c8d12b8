//! The webhook delivery log's records, kept by the store and written by the notifier.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::WebhookEvent;

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Queued, being tried, or waiting for its next try; a loopd stopped before it ended
    /// tries it again on its next start.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every try failed; given up.
    Failed,
    /// Dropped unsent because the endpoint's queue was full.
    Dropped,
}

/// One entry of the delivery log: one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The journal id of the event.
    pub event_id: u64,
    /// The event's webhook name (`test_passed`, ...).
    pub event: WebhookEvent,
    /// The loop it concerns.
    pub loop_name: String,
    /// The endpoint.
    pub url: String,
    /// The `X-Loopd-Delivery` header.
    pub delivery_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Tries made so far.
    pub attempts: u32,
    /// The HTTP status of the last answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last try failed (connection refused, timeout, `HTTP 500`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the endpoint accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// When this record last changed.
    pub updated_at: DateTime<Utc>,
}
