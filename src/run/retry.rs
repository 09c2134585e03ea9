//! Bounded exponential backoff with jitter for transient failures.

use std::time::Duration;

/// Delays to wait between attempts: 200 ms doubling up to 5 s, each with up
/// to ±25 % jitter so that many jobs do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    left: Option<u32>,
}

impl Default for Backoff {
    /// Five retries (about 6 s in all).
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(200),
            left: Some(5),
        }
    }
}

impl Backoff {
    /// Never gives up (the caller bounds it otherwise).
    pub fn unbounded() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            left: None,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(left) = &mut self.left {
            if *left == 0 {
                return None;
            }
            *left -= 1;
        }
        let base = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        let jitter = rand::random_range(0.75..1.25);
        Some(base.mul_f64(jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_growing() {
        let delays: Vec<_> = Backoff::default().collect();
        assert_eq!(delays.len(), 5);
        assert!(delays[0] < Duration::from_millis(260));
        assert!(delays[4] >= Duration::from_millis(2400));
        let mut b = Backoff::unbounded();
        assert!(b.nth(50).unwrap() <= Duration::from_millis(6250));
    }
}
