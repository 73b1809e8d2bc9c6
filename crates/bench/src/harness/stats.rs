//! Latency percentiles and the units the tables print.

use std::time::Duration;

/// Latencies, sorted once.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut all: Vec<Duration>) -> Self {
        all.sort_unstable();
        Self(all)
    }

    /// Nearest rank; zero when empty.
    pub fn p(&self, percent: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((percent / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Duration> for Latencies {
    fn from_iter<I: IntoIterator<Item = Duration>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `count` per second over `over`.
pub fn rate(count: usize, over: Duration) -> f64 {
    count as f64 / over.as_secs_f64().max(1e-9)
}

/// A percentage, or `-` when it could not be measured.
pub fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}%"))
}

/// At most `max` characters of an answer, for error lines.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l: Latencies = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(l.p(50.0), Duration::from_millis(50));
        assert_eq!(l.p(99.0), Duration::from_millis(99));
        assert_eq!(l.max(), Duration::from_millis(100));
        let one = Latencies::new(vec![Duration::from_millis(7)]);
        assert_eq!(one.p(1.0), Duration::from_millis(7));
        assert_eq!(Latencies::default().p(50.0), Duration::ZERO);
    }
}
