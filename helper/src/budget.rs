//! Budgets: token buckets (per breakpoint and per process) and the per-process CPU budget.
//! Pure logic over caller-supplied nanosecond timestamps, so it is unit-testable.

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_ns: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: f64, burst: f64, now_ns: u64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate_per_ns: rate_per_s.max(0.0) / 1e9,
            burst,
            tokens: burst,
            last_ns: now_ns,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ns: u64) -> bool {
        if now_ns > self.last_ns {
            let add = (now_ns - self.last_ns) as f64 * self.rate_per_ns;
            self.tokens = (self.tokens + add).min(self.burst);
            self.last_ns = now_ns;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Number of one-second slots the CPU budget window spans.
const SLOTS: usize = 10;

/// CPU time spent capturing, over a sliding window of `SLOTS` seconds; over `fraction` of the
/// window's wall time the process is throttled (captures are skipped) until usage decays.
#[derive(Clone, Debug)]
pub struct CpuBudget {
    fraction: f64,
    slots: [u64; SLOTS],
    slot_second: [u64; SLOTS],
}

impl CpuBudget {
    pub fn new(fraction: f64) -> Self {
        Self {
            fraction,
            slots: [0; SLOTS],
            slot_second: [u64::MAX; SLOTS],
        }
    }

    /// Records `spent_ns` of capture work at `now_ns`.
    pub fn record(&mut self, now_ns: u64, spent_ns: u64) {
        let sec = now_ns / 1_000_000_000;
        let i = (sec % SLOTS as u64) as usize;
        if self.slot_second[i] != sec {
            self.slot_second[i] = sec;
            self.slots[i] = 0;
        }
        self.slots[i] = self.slots[i].saturating_add(spent_ns);
    }

    /// Capture time within the window ending at `now_ns`.
    pub fn used_ns(&self, now_ns: u64) -> u64 {
        let sec = now_ns / 1_000_000_000;
        (0..SLOTS)
            .filter(|&i| {
                let s = self.slot_second[i];
                s != u64::MAX && s <= sec && sec - s < SLOTS as u64
            })
            .map(|i| self.slots[i])
            .sum()
    }

    /// Whether capture must be skipped now.
    pub fn exhausted(&self, now_ns: u64) -> bool {
        let budget = self.fraction * (SLOTS as f64) * 1e9;
        self.used_ns(now_ns) as f64 > budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_burst_then_rate() {
        let mut b = TokenBucket::new(5.0, 10.0, 0);
        let taken = (0..100).filter(|_| b.try_take(0)).count();
        assert_eq!(taken, 10);
        // 1 s later: 5 more.
        let taken = (0..100).filter(|_| b.try_take(1_000_000_000)).count();
        assert_eq!(taken, 5);
        // Never more than the burst after a long pause.
        let taken = (0..100).filter(|_| b.try_take(1_000_000_000_000)).count();
        assert_eq!(taken, 10);
    }

    #[test]
    fn cpu_budget_throttles_and_recovers() {
        let mut c = CpuBudget::new(0.02);
        let t0 = 5_000_000_000_000;
        assert!(!c.exhausted(t0));
        c.record(t0, 150_000_000);
        assert!(!c.exhausted(t0));
        c.record(t0 + 1, 60_000_000);
        assert!(c.exhausted(t0 + 2));
        // 10 s later the window has moved past it.
        assert!(!c.exhausted(t0 + 10_500_000_000));
    }
}
