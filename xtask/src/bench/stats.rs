//! Statistics of the benchmark figures: medians, nearest-rank percentiles and A/B pair ratios.
//!
//! Nearest-rank percentiles are used throughout (the p-th percentile is an observed value, never
//! an interpolation), so that a p99 over 100 samples is the worst-but-one sample, and the same
//! definition is used on the Python side (`_benchlib.percentile`).
use serde::Serialize;

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `values`; None for an empty slice or a
/// slice holding a NaN.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as usize;
    Some(sorted[rank - 1])
}

/// The median (nearest-rank 50th percentile, i.e. the lower median for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

/// Summary of a set of samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// None for no samples (or a NaN among them).
    pub fn of(values: &[f64]) -> Option<Self> {
        Some(Self {
            n: values.len(),
            median: median(values)?,
            p99: percentile(values, 99.0)?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// The outcome of an A/B comparison run in alternation (A B A B ...).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AbResult {
    /// The measured quantity of each A run (without), in run order.
    pub a: Vec<f64>,
    /// The measured quantity of each B run (with), in run order.
    pub b: Vec<f64>,
    /// B / A for each pair: for a duration, the slowdown factor of that pair.
    pub ratios: Vec<f64>,
    /// Median, min and max of `ratios`.
    pub ratio: Summary,
}

impl AbResult {
    /// Pairs up runs (the i-th A with the i-th B). None if there are no complete pairs or an
    /// A value is not positive.
    pub fn from_runs(a: Vec<f64>, b: Vec<f64>) -> Option<Self> {
        let pairs = a.len().min(b.len());
        if a.iter().take(pairs).any(|&x| x.is_nan() || x <= 0.0) {
            return None;
        }
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b / a).collect();
        let ratio = Summary::of(&ratios)?;
        Some(Self {
            a,
            b,
            ratios,
            ratio,
        })
    }
}

/// Runs `pairs` A/B pairs in alternation: A, B, A, B, ... Each closure returns one measurement
/// (a duration: lower is better). Stops at the first error.
pub fn alternate<E>(
    pairs: usize,
    mut run_a: impl FnMut(usize) -> Result<f64, E>,
    mut run_b: impl FnMut(usize) -> Result<f64, E>,
) -> Result<(Vec<f64>, Vec<f64>), E> {
    let mut a = Vec::with_capacity(pairs);
    let mut b = Vec::with_capacity(pairs);
    for i in 0..pairs {
        a.push(run_a(i)?);
        b.push(run_b(i)?);
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.1), Some(1.0));
        // Order of the input does not matter.
        let rev: Vec<f64> = v.iter().rev().copied().collect();
        assert_eq!(percentile(&rev, 99.0), Some(99.0));
    }

    #[test]
    fn median_of_small_sets() {
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        // Lower median for an even count: an observed value.
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn p99_of_few_samples_is_the_maximum() {
        assert_eq!(percentile(&[1.0, 2.0, 10.0], 99.0), Some(10.0));
    }

    #[test]
    fn summary_fields() {
        let s = Summary::of(&[2.0, 8.0, 4.0, 6.0]).expect("non-empty");
        assert_eq!(
            s,
            Summary {
                n: 4,
                median: 4.0,
                p99: 8.0,
                min: 2.0,
                max: 8.0
            }
        );
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ab_ratios_are_per_pair() {
        // Drift between pairs cancels out: each pair is compared with itself.
        let r = AbResult::from_runs(vec![1.0, 2.0, 4.0], vec![1.1, 2.2, 4.4]).expect("pairs");
        assert_eq!(r.ratios.len(), 3);
        for x in &r.ratios {
            assert!((x - 1.1).abs() < 1e-12, "{x}");
        }
        assert!((r.ratio.median - 1.1).abs() < 1e-12);
        // An incomplete last pair is ignored.
        let r = AbResult::from_runs(vec![1.0, 1.0], vec![2.0]).expect("one pair");
        assert_eq!(r.ratios, vec![2.0]);
        assert!(AbResult::from_runs(vec![0.0], vec![1.0]).is_none());
        assert!(AbResult::from_runs(vec![], vec![]).is_none());
    }

    #[test]
    fn alternate_runs_a_then_b() {
        let log = std::cell::RefCell::new(Vec::new());
        let (a, b) = alternate::<()>(
            3,
            |i| {
                log.borrow_mut().push(format!("A{i}"));
                Ok(1.0)
            },
            |i| {
                log.borrow_mut().push(format!("B{i}"));
                Ok(2.0)
            },
        )
        .expect("no error");
        assert_eq!(log.into_inner(), ["A0", "B0", "A1", "B1", "A2", "B2"]);
        assert_eq!((a.len(), b.len()), (3, 3));
        let err = alternate(
            2,
            |_| Ok(1.0),
            |i| if i == 1 { Err("boom") } else { Ok(1.0) },
        );
        assert_eq!(err, Err("boom"));
    }
}
