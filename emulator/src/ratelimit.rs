use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// Sliding one-second window of admitted requests. Rejected requests are not recorded, so a
/// client that backs off for `Retry-After` seconds is admitted again.
#[derive(Debug, Default)]
pub(crate) struct SlidingWindow {
    admitted: VecDeque<Instant>,
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
        if self.admitted.len() >= limit as usize {
            return false;
        }
        self.admitted.push_back(now);
        true
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
}
