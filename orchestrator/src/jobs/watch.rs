//! One shared watcher of job records for the status push: every stream
//! subscribes here, and a single loop reads all watched jobs in batches
//! (DynamoDB `BatchGetItem`, 100 ids a call; one `IN (…)` query on SQLite)
//! once per interval, so a thousand open streams cost a handful of reads a
//! second, not a thousand.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::view::JobView;
use crate::tasks::TaskStore;

#[derive(Clone)]
pub struct JobWatcher {
    watched: Arc<Mutex<HashMap<String, watch::Sender<JobView>>>>,
}

impl JobWatcher {
    /// Starts the shared loop; it stops with `shutdown`.
    pub fn spawn(
        tasks: Arc<dyn TaskStore>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let watcher = Self {
            watched: Arc::default(),
        };
        let looped = watcher.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => looped.refresh(tasks.as_ref()).await,
                }
            }
        });
        watcher
    }

    /// Follows a job whose current view is `current`. Streams of the same job
    /// share one entry.
    pub fn subscribe(&self, current: JobView) -> watch::Receiver<JobView> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        match watched.get(&current.job_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let id = current.job_id.clone();
                let (sender, receiver) = watch::channel(current);
                watched.insert(id, sender);
                receiver
            }
        }
    }

    /// How many jobs are being watched (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn refresh(&self, tasks: &dyn TaskStore) {
        let ids: Vec<String> = {
            let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            // Streams that closed leave senders without receivers.
            watched.retain(|_, sender| sender.receiver_count() > 0);
            watched.keys().cloned().collect()
        };
        if ids.is_empty() {
            return;
        }
        let records = match tasks.get_many(&ids).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, jobs = ids.len(), "job watcher could not read the task store");
                return;
            }
        };
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        for record in records {
            let view = JobView::from(record);
            let finished = view.is_final();
            if let Some(sender) = watched.get(&view.job_id) {
                sender.send_if_modified(|current| {
                    if *current == view {
                        false
                    } else {
                        *current = view.clone();
                        true
                    }
                });
            }
            if finished {
                // Receivers keep the last value; nothing more will change.
                watched.remove(&view.job_id);
            }
        }
    }
}
