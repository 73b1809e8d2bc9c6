//! `GET /api/v1/jobs/{job_id}/events`: the job's status as Server-Sent
//! Events — the current state at once, then each change, closing after a
//! final state, with keep-alive comments in between. Each event is
//! `event: status` with the job as JSON, whose `status` here is the stored
//! one (`cancelled` included).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use common::{ApiError, caller::Caller};
use futures_util::{Stream, stream};
use tokio::sync::watch;

use super::{
    AppState,
    jobs::{JobId, JobView, visible_job},
};

fn event(view: &JobView) -> Event {
    let mut json = serde_json::to_value(view).unwrap_or_default();
    json["status"] = serde_json::Value::String(view.stored_status().to_owned());
    Event::default().event("status").data(json.to_string())
}

/// Streams the job's status until it is final.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/events", tag = "jobs",
    params(("job_id" = String, Path, description = "The id a submit returned")),
    responses(
        (status = 200, description = "text/event-stream of `status` events, each the job as JSON", content_type = "text/event-stream"),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 404, description = "Job not found", body = common::error::ErrorBody),
        (status = 503, description = "Task store unavailable", body = common::error::ErrorBody),
    ))]
pub async fn job_events(
    State(app): State<AppState>,
    caller: Caller,
    JobId(job_id): JobId,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let current = JobView::from(visible_job(&app, &caller, &job_id).await?);
    let first = event(&current);
    let updates = if current.is_final() {
        None
    } else {
        Some(app.watcher.subscribe(current))
    };
    let rest = stream::unfold(
        updates,
        |updates: Option<watch::Receiver<JobView>>| async move {
            let mut receiver = updates?;
            // Closed sender: the watcher saw a final state and let go.
            receiver.changed().await.ok()?;
            let view = receiver.borrow_and_update().clone();
            let next = (!view.is_final()).then_some(receiver);
            Some((Ok(event(&view)), next))
        },
    );
    let stream = futures_util::StreamExt::chain(stream::once(async move { Ok(first) }), rest);
    // When the process drains, a last `event: shutdown` and the end: the
    // browser's EventSource reconnects, to a task that is staying.
    let stream =
        futures_util::StreamExt::take_until(stream, common::http::lifecycle().streams_closing());
    let shutdown = stream::once(async {
        Ok(Event::default()
            .event("shutdown")
            .data("the server is restarting; reconnect"))
    });
    let stream = futures_util::StreamExt::chain(
        stream,
        futures_util::StreamExt::filter(shutdown, |_| {
            std::future::ready(common::http::lifecycle().is_draining())
        }),
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
