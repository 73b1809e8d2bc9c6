//! Where the process is in its life: serving, or draining after SIGTERM.
//! One per process (the launcher's two services stop together, as ECS
//! stops a whole task): `/ready` turns 503 the moment draining starts, so a
//! load balancer stops routing; responses say `Connection: close` so
//! keep-alive clients reconnect elsewhere; and open event streams are told
//! to end, so they do not hold the drain until its deadline.

use std::sync::{
    OnceLock,
    atomic::{AtomicBool, Ordering},
};

use tokio_util::sync::CancellationToken;

pub struct Lifecycle {
    draining: AtomicBool,
    streams: CancellationToken,
}

/// The process's lifecycle.
pub fn lifecycle() -> &'static Lifecycle {
    static LIFECYCLE: OnceLock<Lifecycle> = OnceLock::new();
    LIFECYCLE.get_or_init(|| Lifecycle {
        draining: AtomicBool::new(false),
        streams: CancellationToken::new(),
    })
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// SIGTERM: stop looking ready, keep serving.
    pub fn begin_drain(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!("draining: /ready answers 503, responses close their connections");
        }
    }

    /// No new connections from now: long-lived responses should end.
    pub fn close_streams(&self) {
        self.streams.cancel();
    }

    /// Resolves when long-lived responses (event streams) should end.
    pub fn streams_closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.streams.cancelled()
    }
}
