//! Order statistics of a run's samples (median, quartiles), as the paper's
//! boxplots show them.
use statrs::statistics::{Data, Max, Min, OrderStatistics};

/// Five-number summary of samples, in their unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Smallest.
    pub min: f64,
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Largest.
    pub max: f64,
}

/// Summary of `v` (non-empty).
pub fn summary(v: &[f64]) -> Summary {
    let mut d = Data::new(v.to_vec());
    Summary { min: d.min(), q1: d.lower_quartile(), median: d.median(), q3: d.upper_quartile(), max: d.max() }
}
