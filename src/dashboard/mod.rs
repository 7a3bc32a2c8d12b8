//! The web dashboard: `GET /` and the pages beside it, server-rendered HTML (maud: every
//! interpolation escaped) with one small embedded script that follows `GET /api/events` and
//! swaps in what changed. No asset is fetched from anywhere but the daemon, nothing is built
//! by the user, and no view reads the store per loop per second: the fleet's rows come from a
//! cache keyed by the store's loop versions, the alerts from an index kept from the live
//! events, and a page is re-read only when an event says its part changed.
//!
//! # Layout
//! - `layout`: the page shell (navigation, live and sign-in markers), regions, formatting.
//! - `login`: `GET/POST /login`, `POST /logout` (the session cookie, see `api::auth`).
//! - `assets`: `GET /assets/{name}`, the embedded script and style sheet.
//! - `rows`: the fleet's rows, cached, and what needs a person first.
//! - `fleet`: `GET /`, the fleet table (filters, search, pages of 100).
//! - `loop_page`: `GET /loops/{loop}`, the tests as a graph and a table, diagnoses, lessons,
//!   config, hint form.
//! - `graph`: the tests' dependency graph as SVG.
//! - `attempt`: `GET /loops/{loop}/tests/{test}/attempts/{n}`, the rendered transcript, live.
//! - `timeline`: `GET /timeline`, attempts as bars over time, one row per loop.
//! - `cost`: `GET /cost`, spend per loop, test and model, burn rate, projection, budgets.
//! - `insights`: `GET /insights`, failure fingerprints and lessons.
//! - `alerts`: `GET /alerts`, the alert events newest first.
//! - `journal`: what the pages keep from the event journal (alerts, attempts as bars, spend).

mod alerts;
mod assets;
mod attempt;
mod cost;
mod fleet;
mod graph;
mod insights;
mod journal;
pub mod layout;
pub mod login;
mod loop_page;
pub mod rows;
mod timeline;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use loopd_actors::runtime::Ctx;

use crate::api::ApiState;

/// What the dashboard keeps between requests.
#[derive(Debug, Default)]
pub struct Cache {
    /// The fleet table's rows.
    pub rows: rows::RowCache,
    /// What the pages need from the event journal.
    journal: Arc<journal::JournalIndex>,
}

impl Cache {
    /// The journal index, started on first use.
    pub fn journal(&self, ctx: &Ctx) -> &journal::JournalIndex {
        self.journal.start(ctx);
        &self.journal
    }

    /// The journal index, read to its end (or as far as it got in a second).
    pub async fn settled_journal(&self, ctx: &Ctx) -> &journal::JournalIndex {
        let index = self.journal(ctx);
        index.settle(std::time::Duration::from_secs(1)).await;
        index
    }

    /// The alerts of the last day, for `#alerts-count`.
    pub fn recent_alerts(&self, ctx: &Ctx) -> usize {
        self.journal(ctx).recent_alerts()
    }

    /// The live markers of a page about nothing in particular.
    pub async fn live(&self, ctx: &Ctx) -> layout::Live {
        layout::Live {
            after: last_event_id(ctx),
            ..layout::Live::default()
        }
    }
}

/// The journal's last id (0 when it cannot be read: the page then follows only live events).
pub fn last_event_id(ctx: &Ctx) -> u64 {
    ctx.store().last_event_id().unwrap_or(0)
}

/// The dashboard's routes (outside `/api`).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(fleet::page))
        .route("/loops/{loop}", get(loop_page::page))
        .route(
            "/loops/{loop}/tests/{test}/attempts/{n}",
            get(attempt::page),
        )
        .route("/timeline", get(timeline::page))
        .route("/cost", get(cost::page))
        .route("/insights", get(insights::page))
        .route("/alerts", get(alerts::page))
        .route("/login", get(login::form).post(login::sign_in))
        .route("/logout", post(login::sign_out))
        .route("/assets/{name}", get(assets::serve))
}
