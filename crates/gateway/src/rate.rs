//! The per-connection inbound rate limit: two token buckets, one on frames
//! and one on bytes, refilled continuously. A connection that reads a frame
//! either bucket cannot pay for is closed with 4429 (only that connection).
//!
//! Sans I/O: the caller passes the time, so the tests need no clock.

use std::time::Instant;

use crate::config::Limits;

/// A token bucket: holds at most `burst` tokens, refills at `rate` a second.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    level: f64,
}

impl Bucket {
    /// A full bucket; a `rate` of 0 never refuses.
    fn new(rate: u64, burst: u64) -> Bucket {
        let burst = burst.max(1) as f64;
        Bucket {
            rate: rate as f64,
            burst,
            level: burst,
        }
    }

    /// Refills for `secs` elapsed, then takes `n` tokens if there are enough.
    fn take(&mut self, n: f64, secs: f64) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        self.level = (self.level + secs * self.rate).min(self.burst);
        if self.level < n {
            return false;
        }
        self.level -= n;
        true
    }
}

/// One connection's inbound budget (`--peer-msgs-per-sec`, `--peer-bytes-per-sec`
/// and their bursts).
#[derive(Debug)]
pub(crate) struct InboundRate {
    msgs: Bucket,
    bytes: Bucket,
    at: Instant,
}

impl InboundRate {
    /// Full buckets at `now`. The byte burst is at least
    /// `--max-message-bytes`, so one message of the largest size allowed
    /// always passes a rested connection.
    pub(crate) fn new(limits: &Limits, now: Instant) -> InboundRate {
        let bytes_burst = limits.peer_bytes_burst.max(limits.max_message_bytes as u64);
        InboundRate {
            msgs: Bucket::new(limits.peer_msgs_per_sec, limits.peer_msgs_burst),
            bytes: Bucket::new(limits.peer_bytes_per_sec, bytes_burst),
            at: now,
        }
    }

    /// Charges one frame of `len` bytes read at `now`; false: over the limit.
    pub(crate) fn admit(&mut self, len: usize, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        // Both buckets refill; a frame refused by one is not charged to the other.
        let msgs = self.msgs.take(1.0, secs);
        let bytes = self.bytes.take(len as f64, secs);
        msgs && bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(msgs: (u64, u64), bytes: (u64, u64)) -> Limits {
        Limits {
            peer_msgs_per_sec: msgs.0,
            peer_msgs_burst: msgs.1,
            peer_bytes_per_sec: bytes.0,
            peer_bytes_burst: bytes.1,
            max_message_bytes: 10,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills_it() {
        let t0 = Instant::now();
        let mut r = InboundRate::new(&limits((10, 5), (0, 0)), t0);
        assert!((0..5).all(|_| r.admit(1, t0)));
        assert!(!r.admit(1, t0), "the burst is spent");
        let later = t0 + Duration::from_millis(200);
        assert!(r.admit(1, later) && r.admit(1, later), "two refilled");
        assert!(!r.admit(1, later));
        let rested = t0 + Duration::from_secs(100);
        assert!((0..5).all(|_| r.admit(1, rested)), "refill caps at burst");
        assert!(!r.admit(1, rested));
    }

    #[test]
    fn bytes_are_limited_and_the_largest_message_always_fits_a_rested_bucket() {
        let t0 = Instant::now();
        // Byte burst 4 is raised to max_message_bytes (10).
        let mut r = InboundRate::new(&limits((0, 0), (5, 4)), t0);
        assert!(r.admit(10, t0));
        assert!(!r.admit(1, t0));
        assert!(r.admit(5, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_zero_rate_never_refuses() {
        let t0 = Instant::now();
        let mut r = InboundRate::new(&limits((0, 1), (0, 1)), t0);
        assert!((0..10_000).all(|_| r.admit(1 << 20, t0)));
    }
}
