//! The per-client request rate: a keyed limiter (GCRA, from `governor`) over
//! callers, each an API token or a peer address, whose table forgets callers
//! that have been idle long enough to have their whole burst back.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// How often the table of callers drops those back at a full burst.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Requests each client may make: `per_second` on average, and up to `burst`
/// at once after a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Who a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// The index of the API token it presented, when tokens are configured.
    Token(usize),
    /// The peer's address; an IPv6 peer by its /64 network, since one host
    /// commonly holds a whole /64 and could otherwise pick a new key per request.
    Peer(IpAddr),
}

impl Caller {
    pub(crate) fn peer(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Caller::Peer(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Caller::Peer(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    Caller::Peer(IpAddr::V6(network.into()))
                }
            },
        }
    }
}

/// A keyed limiter over [`Caller`]s with a table bounded by recent use.
pub(crate) struct ClientRate<C: Clock = DefaultClock> {
    limiter: RateLimiter<Caller, DashMapStateStore<Caller>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    start: C::Instant,
    /// Nanoseconds after `start` of the last sweep of the table.
    last_sweep: AtomicU64,
}

impl ClientRate {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ClientRate<C> {
    pub(crate) fn with_clock(limit: RateLimit, clock: C) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        let start = clock.now();
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            start,
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Counts one request of `caller`: `Ok` when it may go on, otherwise how
    /// long until it may.
    pub(crate) fn check(&self, caller: &Caller) -> Result<(), Duration> {
        self.sweep_if_due();
        self.limiter
            .check_key(caller)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Callers in the table.
    #[cfg(test)]
    pub(crate) fn callers(&self) -> usize {
        self.limiter.len()
    }

    /// Drops the callers whose bucket is full again, at most once per
    /// [`SWEEP_EVERY`], so the table holds only callers seen within about a
    /// burst's refill time plus that period.
    fn sweep_if_due(&self) {
        let now = u64::from(self.clock.now().duration_since(self.start));
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= SWEEP_EVERY.as_nanos() as u64;
        if due
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: NonZeroU32::new(per_second).expect("positive"),
            burst: NonZeroU32::new(burst).expect("positive"),
        }
    }

    #[test]
    fn a_burst_passes_then_the_caller_waits_alone() {
        let clock = FakeRelativeClock::default();
        let rate = ClientRate::with_clock(limit(2, 3), clock.clone());
        let a = Caller::Token(0);
        for _ in 0..3 {
            assert_eq!(rate.check(&a), Ok(()));
        }
        let wait = rate.check(&a).expect_err("the fourth request is over the burst");
        assert_eq!(wait, Duration::from_millis(500), "one request per 500 ms refills");
        assert_eq!(rate.check(&Caller::Token(1)), Ok(()), "another caller is not held up");

        clock.advance(Duration::from_millis(500));
        assert_eq!(rate.check(&a), Ok(()));
        assert!(rate.check(&a).is_err());
    }

    #[test]
    fn idle_callers_leave_the_table() {
        let clock = FakeRelativeClock::default();
        let rate = ClientRate::with_clock(limit(10, 10), clock.clone());
        for n in 0..100u8 {
            assert_eq!(rate.check(&Caller::peer(Ipv4Addr::new(10, 0, 0, n).into())), Ok(()));
        }
        assert_eq!(rate.callers(), 100);

        // A caller that keeps sending stays; the others have their burst back.
        clock.advance(SWEEP_EVERY);
        let busy = Caller::Token(7);
        for _ in 0..5 {
            assert_eq!(rate.check(&busy), Ok(()));
        }
        assert!(rate.callers() <= 1, "{} callers kept", rate.callers());
        assert!(rate.check(&busy).is_ok());
    }

    #[test]
    fn ipv6_peers_count_by_their_network() {
        let one: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().expect("an address");
        let two: Ipv6Addr = "2001:db8:1:2:bbbb::2".parse().expect("an address");
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().expect("an address");
        assert_eq!(Caller::peer(one.into()), Caller::peer(two.into()));
        assert_ne!(Caller::peer(one.into()), Caller::peer(other.into()));
        let mapped: Ipv6Addr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        assert_eq!(Caller::peer(mapped.into()), Caller::Peer(Ipv4Addr::new(192, 0, 2, 1).into()));
    }
}
