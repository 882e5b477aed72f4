//! Load balancing: which endpoint of an upstream takes the next attempt.
//!
//! Pure selection logic over endpoint indices, unit-tested here; the
//! caller ([`super::upstream`]) says which endpoints are usable (healthy,
//! not ejected, not already tried by this request) and how busy each is.
//!
//! - **round-robin**: a smooth weighted schedule (nginx's algorithm),
//!   computed once, walked by one atomic counter;
//! - **least-request**: power of two choices: two random usable endpoints,
//!   the one with fewer requests in flight per unit of weight wins;
//! - **hash**: a consistent ring (160 points per unit of weight) keyed by a
//!   request header or the client IP, so a key sticks to an endpoint and
//!   only the keys of an endpoint that leaves move. The ring hash is
//!   SHA-256, so every gateway in a fleet maps a key the same way.

use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

/// Ring points per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;

/// How endpoints are chosen (the validated `balance` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    /// Consistent hashing of the value of [`HashOn`].
    Hash(HashOn),
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client IP as the gateway determined it.
    ClientIp,
    /// A request header's value; requests without it hash on the client IP.
    Header(http::header::HeaderName),
}

/// A built balancer for one upstream's endpoints.
pub enum Balancer {
    RoundRobin {
        schedule: Vec<usize>,
        next: AtomicUsize,
    },
    LeastRequest {
        weights: Vec<u32>,
    },
    Hash {
        ring: Vec<(u64, usize)>,
    },
}

impl Balancer {
    /// `names` identify the endpoints on the ring (their URLs), `weights`
    /// are all ≥ 1.
    pub fn new(balance: &Balance, names: &[String], weights: &[u32]) -> Self {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin {
                schedule: smooth_schedule(weights),
                next: AtomicUsize::new(0),
            },
            Balance::LeastRequest => Balancer::LeastRequest {
                weights: weights.to_vec(),
            },
            Balance::Hash(_) => Balancer::Hash {
                ring: ring(names, weights),
            },
        }
    }

    /// An endpoint for which `usable` holds, or `None` when there is none.
    /// `key` is the hash key (hash mode only); `in_flight` reports how
    /// many requests an endpoint is serving (least-request only).
    pub fn pick(
        &self,
        key: &[u8],
        in_flight: impl Fn(usize) -> u64,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin { schedule, next } => {
                // Each skipped slot is consumed too, so the usable
                // endpoints share the skipped one's turns evenly.
                (0..schedule.len())
                    .map(|_| schedule[next.fetch_add(1, Ordering::Relaxed) % schedule.len()])
                    .find(|&i| usable(i))
            }
            Balancer::LeastRequest { weights } => {
                let candidates: Vec<usize> = (0..weights.len()).filter(|&i| usable(i)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    n => {
                        let a = candidates[fastrand::usize(..n)];
                        let mut b = candidates[fastrand::usize(..n - 1)];
                        if b == a {
                            b = candidates[n - 1];
                        }
                        // Fewer in flight per unit of weight wins:
                        // a/wa <= b/wb, compared without division.
                        let la = in_flight(a) as u128 * weights[b] as u128;
                        let lb = in_flight(b) as u128 * weights[a] as u128;
                        Some(if la <= lb { a } else { b })
                    }
                }
            }
            Balancer::Hash { ring } => {
                if ring.is_empty() {
                    return None;
                }
                let h = hash64(key);
                let start = ring.partition_point(|&(p, _)| p < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|&i| usable(i))
            }
        }
    }
}

/// nginx's smooth weighted round-robin, unrolled into one period: weights
/// 5:1:1 give `a a b a c a a`, not `a a a a a b c`.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (x / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let best = (0..w.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .expect("at least one endpoint");
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn ring(names: &[String], weights: &[u32]) -> Vec<(u64, usize)> {
    let mut ring = Vec::new();
    for (i, (name, &w)) in names.iter().zip(weights).enumerate() {
        for point in 0..w * POINTS_PER_WEIGHT {
            ring.push((hash64(format!("{name}#{point}").as_bytes()), i));
        }
    }
    ring.sort_unstable();
    ring
}

fn hash64(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    u64::from_be_bytes(d[..8].try_into().expect("a digest has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:80")).collect()
    }

    fn counts(b: &Balancer, n: usize, picks: usize, usable: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut c = vec![0; n];
        for k in 0..picks {
            let key = format!("key-{k}");
            c[b.pick(key.as_bytes(), |_| 0, &usable).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_even_and_weights_interleave() {
        let b = Balancer::new(&Balance::RoundRobin, &names(3), &[1, 1, 1]);
        assert_eq!(counts(&b, 3, 300, |_| true), vec![100, 100, 100]);
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 4]), vec![1, 0, 1]);
        let w = Balancer::new(&Balance::RoundRobin, &names(2), &[1, 2]);
        assert_eq!(counts(&w, 2, 300, |_| true), vec![100, 200]);
    }

    #[test]
    fn unusable_endpoints_are_skipped_and_none_means_none() {
        let b = Balancer::new(&Balance::RoundRobin, &names(3), &[1, 1, 1]);
        assert_eq!(counts(&b, 3, 300, |i| i != 1), vec![150, 0, 150]);
        assert_eq!(b.pick(b"", |_| 0, |_| false), None);
        let l = Balancer::new(&Balance::LeastRequest, &names(3), &[1, 1, 1]);
        assert_eq!(l.pick(b"", |_| 0, |i| i == 2), Some(2));
        assert_eq!(l.pick(b"", |_| 0, |_| false), None);
        let h = Balancer::new(&Balance::Hash(HashOn::ClientIp), &names(3), &[1, 1, 1]);
        assert_eq!(h.pick(b"k", |_| 0, |_| false), None);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::new(&Balance::LeastRequest, &names(3), &[1, 1, 1]);
        // Endpoint 0 is busy: two random choices never both land on it.
        let busy = |i: usize| if i == 0 { 50 } else { 0 };
        let c = (0..300).fold(vec![0; 3], |mut c, _| {
            c[b.pick(b"", busy, |_| true).unwrap()] += 1;
            c
        });
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 100 && c[2] > 100, "{c:?}");
        // Weight counts: 4 in flight on weight 4 is as busy as 1 on weight 1.
        let w = Balancer::new(&Balance::LeastRequest, &names(2), &[4, 1]);
        let load = |i: usize| if i == 0 { 3 } else { 1 };
        assert!((0..50).all(|_| w.pick(b"", load, |_| true) == Some(0)));
    }

    #[test]
    fn hash_is_sticky_spread_and_moves_only_the_lost_endpoints_keys() {
        let b = Balancer::new(&Balance::Hash(HashOn::ClientIp), &names(3), &[1, 1, 1]);
        for k in 0..100 {
            let key = format!("user-{k}");
            let first = b.pick(key.as_bytes(), |_| 0, |_| true);
            assert!((0..5).all(|_| b.pick(key.as_bytes(), |_| 0, |_| true) == first));
        }
        let c = counts(&b, 3, 3000, |_| true);
        assert!(c.iter().all(|&n| n > 700), "{c:?}");
        // Without endpoint 2, keys that were on 0 or 1 stay where they were.
        for k in 0..300 {
            let key = format!("key-{k}");
            let all = b.pick(key.as_bytes(), |_| 0, |_| true).unwrap();
            let fewer = b.pick(key.as_bytes(), |_| 0, |i| i != 2).unwrap();
            if all != 2 {
                assert_eq!(all, fewer);
            }
        }
    }
}
