//! Per-client rate limits on the calls that cost something (job submits,
//! uploads, new sessions): one token bucket per client, refilled at
//! `per_minute`, holding at most `burst` tokens. A client over its limit gets
//! 429 with `Retry-After`; reads are never limited here.
//!
//! The client is the verified user (`user:<sub>`) when a token came with the
//! request, else its address (`ip:<addr>`, see [`client_addr`]). The buckets
//! live in this process: two replicas each allow the full rate, which is
//! what a per-replica limiter can promise (the daily job quota, which must be
//! shared, lives in the task store instead).

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::{
    ApiError,
    caller::{Caller, ClientAddr},
    config::{ConfigError, Env},
};

/// One limit as configured: `0` per minute switches it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub per_minute: u32,
    pub burst: u32,
}

impl LimitSettings {
    /// Reads `<per_minute_var>` and `<burst_var>`; the burst defaults to
    /// `default.burst` but never below 1.
    pub fn from_env(
        env: &Env,
        per_minute_var: &'static str,
        burst_var: &'static str,
        default: LimitSettings,
    ) -> Result<Self, ConfigError> {
        let per_minute = env.parse_or(&[per_minute_var], default.per_minute)?;
        let burst = env.parse_or(&[burst_var], default.burst)?;
        if per_minute > 0 && burst == 0 {
            return Err(ConfigError::new(
                burst_var,
                "must be at least 1 while the limit is on",
            ));
        }
        Ok(Self { per_minute, burst })
    }

    pub fn is_enabled(&self) -> bool {
        self.per_minute > 0
    }
}

/// A named limit and its buckets, shared by every request of one route
/// group.
pub struct RateLimit {
    /// What is limited, for the `detail`: "job submits", "uploads", …
    what: &'static str,
    settings: LimitSettings,
    buckets: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("what", &self.what)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Buckets idle long enough to be full again are dropped this often (in
/// checks), so a stream of one-off addresses cannot grow the map forever.
const PRUNE_EVERY: u64 = 4096;

impl RateLimit {
    pub fn new(what: &'static str, settings: LimitSettings) -> Arc<Self> {
        let buckets = match (
            NonZeroU32::new(settings.per_minute),
            NonZeroU32::new(settings.burst),
        ) {
            (Some(per_minute), Some(burst)) => Some(RateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            )),
            _ => None,
        };
        Arc::new(Self {
            what,
            settings,
            buckets,
            checks: AtomicU64::new(0),
        })
    }

    /// A limit that never refuses (documents, benchmarks).
    pub fn off(what: &'static str) -> Arc<Self> {
        Self::new(
            what,
            LimitSettings {
                per_minute: 0,
                burst: 0,
            },
        )
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// Takes one token from `client`'s bucket, or says how long to wait.
    pub fn check(&self, client: &ClientKey) -> Result<(), ApiError> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        buckets.check_key(&client.0).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::info!(
                client = %client.0,
                limit = self.what,
                retry_after = seconds,
                "rate limit reached"
            );
            ApiError::too_many_requests(
                format!(
                    "Too many {}: the limit is {} a minute (bursts of {}); retry in {seconds} s",
                    self.what, self.settings.per_minute, self.settings.burst
                ),
                seconds,
            )
        })
    }
}

/// Who a limit or quota counts against: `user:<sub>` or `ip:<address>`.
/// Put into the request's extensions by [`limit`], for handlers that keep
/// their own counts (the daily job quota).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(pub String);

impl ClientKey {
    pub fn of(caller: Option<&Caller>, addr: Option<IpAddr>) -> Self {
        match (caller.and_then(|c| c.user_id.as_deref()), addr) {
            (Some(sub), _) => Self(format!("user:{sub}")),
            (None, Some(addr)) => Self(format!("ip:{}", canonical(addr))),
            // Only when the router is driven without a listener (tests).
            (None, None) => Self("ip:unknown".to_owned()),
        }
    }

    /// The key of a request, from what the middleware put into it.
    pub fn of_request(request: &Request) -> Self {
        Self::of(
            request.extensions().get::<Caller>(),
            request.extensions().get::<ClientAddr>().map(|a| a.0),
        )
    }
}

/// An IPv4 client seen through an IPv6 socket is the same client.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Middleware for a limited route group: checks the bucket, then records
/// the client key for the handler.
pub async fn limit(
    State(limit): State<Arc<RateLimit>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = ClientKey::of_request(&request);
    if let Err(refused) = limit.check(&client) {
        return refused.into_response();
    }
    request.extensions_mut().insert(client);
    next.run(request).await
}

/// The client's address: the TCP peer, or — behind `trusted_hops` proxies
/// that each append the address they saw to `X-Forwarded-For` — the
/// `trusted_hops`-th address from the right. The left-most entries are
/// whatever the client wrote and are never trusted. Fewer entries than hops
/// means the request did not come through the proxies: the peer is used.
pub fn client_addr(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted_hops: usize,
) -> Option<IpAddr> {
    let peer = peer.map(|p| p.ip());
    if trusted_hops == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if forwarded.len() < trusted_hops {
        return peer;
    }
    forwarded[forwarded.len() - trusted_hops]
        .parse::<IpAddr>()
        .ok()
        .or(peer)
}

/// Router-wide middleware: records [`ClientAddr`] for the limits and logs.
pub async fn identify_client(
    State(trusted_hops): State<usize>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Some(addr) = client_addr(peer, request.headers(), trusted_hops) {
        request.extensions_mut().insert(ClientAddr(addr));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in xff {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_is_read_from_the_right() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let spoofed = headers(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(
            client_addr(Some(peer), &spoofed, 0),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            client_addr(Some(peer), &spoofed, 1),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_addr(Some(peer), &spoofed, 2),
            Some("6.6.6.6".parse().unwrap())
        );
        // Split over two headers, as some proxies do.
        let split = headers(&["6.6.6.6", "198.51.100.1, 203.0.113.7"]);
        assert_eq!(
            client_addr(Some(peer), &split, 2),
            Some("198.51.100.1".parse().unwrap())
        );
        // Not enough hops: the request bypassed the proxies.
        assert_eq!(
            client_addr(Some(peer), &headers(&[]), 1),
            Some("10.0.0.5".parse().unwrap())
        );
        // Garbage in the trusted position falls back to the peer.
        assert_eq!(
            client_addr(Some(peer), &headers(&["x, not-an-ip"]), 1),
            Some("10.0.0.5".parse().unwrap())
        );
    }

    #[test]
    fn a_burst_then_a_refusal_with_retry_after() {
        let limit = RateLimit::new(
            "job submits",
            LimitSettings {
                per_minute: 60,
                burst: 3,
            },
        );
        let client = ClientKey("ip:192.0.2.1".into());
        for _ in 0..3 {
            limit.check(&client).unwrap();
        }
        let refused = limit.check(&client).unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(
            refused.detail().contains("job submits"),
            "{}",
            refused.detail()
        );
        // Another client has its own bucket.
        limit.check(&ClientKey("ip:192.0.2.2".into())).unwrap();
        // Off means off.
        let off = RateLimit::off("uploads");
        for _ in 0..100 {
            off.check(&client).unwrap();
        }
    }

    #[test]
    fn users_and_addresses_are_distinct_clients() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            ClientKey::of(None, Some(v4)),
            ClientKey::of(None, Some(mapped))
        );
        let user = Caller {
            user_id: Some("u1".into()),
        };
        assert_eq!(ClientKey::of(Some(&user), Some(v4)).0, "user:u1");
        assert_eq!(
            ClientKey::of(Some(&Caller::ANONYMOUS), Some(v4)).0,
            "ip:192.0.2.1"
        );
    }
}
