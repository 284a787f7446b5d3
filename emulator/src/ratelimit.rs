use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// Sliding one-second window of requests. By default rejected requests are not recorded, so
/// a client that backs off for `Retry-After` seconds is admitted again; in strict mode every
/// request counts, as providers that punish retries do, so only a client that never exceeds
/// the limit in any one-second window is always admitted.
#[derive(Debug, Default)]
pub(crate) struct SlidingWindow {
    admitted: VecDeque<Instant>,
    pub strict: bool,
}

impl SlidingWindow {
    /// Admits the request (and records it) when fewer than `limit` were admitted in the last second.
    pub fn try_admit(&mut self, limit: u32, now: Instant) -> bool {
        while let Some(&first) = self.admitted.front() {
            if now.duration_since(first) >= WINDOW {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        let admit = self.admitted.len() < limit as usize;
        if admit || self.strict {
            self.admitted.push_back(now);
        }
        admit
    }

    pub fn clear(&mut self) {
        self.admitted.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_limit_per_second_then_recovers() {
        let mut w = SlidingWindow::default();
        let t0 = Instant::now();
        assert!((0..10).all(|_| w.try_admit(10, t0)));
        assert!(!w.try_admit(10, t0 + Duration::from_millis(999)));
        assert!(w.try_admit(10, t0 + WINDOW));
    }

    #[test]
    fn strict_mode_counts_rejected_requests_too() {
        let mut w = SlidingWindow {
            strict: true,
            ..SlidingWindow::default()
        };
        let t0 = Instant::now();
        assert!((0..10).all(|_| w.try_admit(10, t0)));
        let late = t0 + Duration::from_millis(999);
        assert!((0..10).all(|_| !w.try_admit(10, late)));
        // The rejected requests still count: a second after the burst is not enough…
        assert!(!w.try_admit(10, t0 + WINDOW));
        // …a second after them is.
        assert!(w.try_admit(10, late + WINDOW + Duration::from_millis(1)));
    }
}
