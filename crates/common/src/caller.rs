//! Who is calling: the verified user (when a Supabase access token came with
//! the request) and the client's network address. Both services read it to
//! scope sessions and jobs to their owner and to key the rate limits.

use std::net::IpAddr;

/// Put into every request's extensions by the auth layer. `user_id` is the
/// token's `sub` when a valid token was presented, `None` for an anonymous
/// caller (or when accounts are off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Option<String>,
}

impl Caller {
    pub const ANONYMOUS: Caller = Caller { user_id: None };

    /// May this caller see a resource owned by `owner`? Unowned resources
    /// are reachable by anyone who knows their id (the id is the capability,
    /// as before accounts existed).
    pub fn may_access(&self, owner: Option<&str>) -> bool {
        match owner {
            None => true,
            Some(owner) => self.user_id.as_deref() == Some(owner),
        }
    }
}

/// The client's address as the rate limits see it: the TCP peer, or behind
/// `TRUSTED_PROXY_HOPS` load balancers the address they saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);
