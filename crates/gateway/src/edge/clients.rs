//! Who is connected: the server-wide connection cap, per-client-address
//! caps on concurrent connections, and per-address handshake rates.
//!
//! Loopback peers are not capped per address: they are the local reverse
//! proxy (whose clients all share its address; `--trust-proxy-headers`
//! then caps each real client by `X-Forwarded-For`), the demo, or the
//! operator. An address taken from `X-Forwarded-For` is always capped.
//!
//! IPv6 clients are counted per /64 (one subscriber's allocation: a single
//! host can use any address in it), IPv4-mapped IPv6 addresses as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most addresses tracked for handshake rates before idle ones are dropped.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// A client address and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The address.
    pub ip: IpAddr,
    /// Taken from `X-Forwarded-For` (never exempt), not the TCP peer.
    pub forwarded: bool,
}

impl ClientAddr {
    fn capped(&self) -> bool {
        self.forwarded || !self.ip.is_loopback()
    }

    /// What the caps count: the IPv4 address, or the IPv6 /64.
    fn key(&self) -> IpAddr {
        match self.ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
        }
    }
}

/// Connection accounting shared by the accept loop and every request.
#[derive(Debug)]
pub struct Clients {
    /// One permit per open TCP connection (upgraded WebSockets included).
    total: Arc<Semaphore>,
    /// Open connections per capped address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Handshake token buckets per capped address.
    handshakes: Mutex<HashMap<IpAddr, Bucket>>,
    handshakes_per_sec: f64,
}

/// A token bucket: `tokens` refill at the configured rate up to one second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One open connection's share of the caps; dropping it frees them.
#[derive(Debug)]
pub struct Slot {
    _total: Option<OwnedSemaphorePermit>,
    ip: Option<IpAddr>,
    clients: Arc<Clients>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut map = self.clients.per_ip();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Clients {
    /// Caps: `max_connections` in total, `max_per_ip` per address (0: none),
    /// `handshakes_per_sec` WebSocket upgrades per address (0: none).
    pub fn new(max_connections: usize, max_per_ip: usize, handshakes_per_sec: u32) -> Arc<Clients> {
        Arc::new(Clients {
            total: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            handshakes: Mutex::new(HashMap::new()),
            handshakes_per_sec: f64::from(handshakes_per_sec),
        })
    }

    fn per_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        lock(&self.per_ip)
    }

    /// A new TCP connection from `peer` (`None`: the peer is not capped per
    /// address here, e.g. behind a trusted proxy). `None` back: refuse it.
    pub fn connect(self: &Arc<Self>, peer: Option<ClientAddr>) -> Option<Slot> {
        let total = self.total.clone().try_acquire_owned().ok()?;
        let mut slot = Slot {
            _total: Some(total),
            ip: None,
            clients: self.clone(),
        };
        if let Some(peer) = peer {
            slot.ip = self.take_ip(peer)?;
        }
        Some(slot)
    }

    /// A slot for one more connection (or request) of `client`, counted per
    /// address only. `None`: over `--max-connections-per-ip`.
    pub fn client(self: &Arc<Self>, client: ClientAddr) -> Option<Slot> {
        let ip = self.take_ip(client)?;
        Some(Slot {
            _total: None,
            ip,
            clients: self.clone(),
        })
    }

    /// `Some(Some(ip))`: counted; `Some(None)`: not capped; `None`: over the cap.
    fn take_ip(&self, client: ClientAddr) -> Option<Option<IpAddr>> {
        if self.max_per_ip == 0 || !client.capped() {
            return Some(None);
        }
        let key = client.key();
        let mut map = self.per_ip();
        let n = map.entry(key).or_default();
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Some(key))
    }

    /// Whether `client` may start another WebSocket handshake now.
    pub fn allow_handshake(&self, client: ClientAddr) -> bool {
        if self.handshakes_per_sec <= 0.0 || !client.capped() {
            return true;
        }
        let now = Instant::now();
        let rate = self.handshakes_per_sec;
        let mut map = lock(&self.handshakes);
        if map.len() >= MAX_TRACKED_ADDRESSES {
            // Forget addresses whose bucket has refilled: they are idle.
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < rate);
        }
        let bucket = map.entry(client.key()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// Open TCP connections.
    pub fn open_connections(&self, max: usize) -> usize {
        max.saturating_sub(self.total.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(last: u8) -> ClientAddr {
        ClientAddr {
            ip: IpAddr::from([203, 0, 113, last]),
            forwarded: false,
        }
    }

    #[test]
    fn the_total_cap_refuses_at_once_and_frees_on_drop() {
        let clients = Clients::new(2, 0, 0);
        let a = clients.connect(None).expect("first");
        let _b = clients.connect(None).expect("second");
        assert!(clients.connect(None).is_none());
        drop(a);
        assert!(clients.connect(None).is_some());
    }

    #[test]
    fn the_per_address_cap_counts_each_address_alone() {
        let clients = Clients::new(100, 2, 0);
        let a1 = clients.connect(Some(remote(1))).expect("1");
        let _a2 = clients.connect(Some(remote(1))).expect("2");
        assert!(clients.connect(Some(remote(1))).is_none());
        assert!(clients.client(remote(1)).is_none());
        assert!(clients.connect(Some(remote(2))).is_some());
        drop(a1);
        assert!(clients.connect(Some(remote(1))).is_some());
    }

    #[test]
    fn loopback_is_not_capped_unless_forwarded() {
        let clients = Clients::new(100, 1, 1);
        let local = ClientAddr {
            ip: IpAddr::from([127, 0, 0, 1]),
            forwarded: false,
        };
        let _a = clients.client(local).expect("1");
        assert!(clients.client(local).is_some());
        assert!(clients.allow_handshake(local) && clients.allow_handshake(local));
        let forwarded = ClientAddr {
            forwarded: true,
            ..local
        };
        let _f = clients.client(forwarded).expect("first forwarded");
        assert!(clients.client(forwarded).is_none());
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_cap() {
        let clients = Clients::new(100, 1, 0);
        let v6 = |s: &str| ClientAddr {
            ip: s.parse().expect("ipv6"),
            forwarded: false,
        };
        let _a = clients.client(v6("2001:db8:1:2::1")).expect("first");
        assert!(
            clients.client(v6("2001:db8:1:2:ffff::9")).is_none(),
            "same /64"
        );
        assert!(
            clients.client(v6("2001:db8:1:3::1")).is_some(),
            "another /64"
        );
        let _m = clients.client(v6("::ffff:203.0.113.1")).expect("mapped");
        assert!(
            clients.client(remote(1)).is_none(),
            "mapped IPv4 is that IPv4"
        );
    }

    #[test]
    fn handshakes_beyond_the_rate_are_refused() {
        let clients = Clients::new(100, 0, 3);
        let c = remote(9);
        let allowed = (0..10).filter(|_| clients.allow_handshake(c)).count();
        assert_eq!(allowed, 3);
        assert!(clients.allow_handshake(remote(10)));
    }
}
