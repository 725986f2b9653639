//! A benchmark's figures, one per variant, metric and repetition: printed
//! as median and range, and, when `QSOCK_RESULTS` names a directory (as
//! `scripts/multipath.sh` does), written there as `<bench>.csv` and one
//! boxplot per metric, `<bench>-<metric>.svg`.
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Environment variable naming the directory results are written to.
pub const RESULTS_ENV: &str = "QSOCK_RESULTS";

/// One figure: `value` in `unit` of `metric` for `variant`, repetition `rep`.
#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    bench: String,
    variant: String,
    metric: String,
    unit: String,
    rep: usize,
    value: f64,
}

/// One metric's figures: per variant, its values over the repetitions.
struct Metric {
    name: String,
    unit: String,
    variants: Vec<(String, Vec<f64>)>,
}

/// The figures of one benchmark run, in the order they were added.
#[derive(Debug)]
pub struct Figures {
    bench: String,
    rows: Vec<Row>,
}

impl Figures {
    /// Empty figures of the benchmark `bench` (names the output files).
    pub fn new(bench: &str) -> Self {
        Self { bench: bench.into(), rows: Vec::new() }
    }

    /// Records `value` (in `unit`, e.g. `"ms"`, `"Mbit/s"`, `""` for a
    /// count) of `metric` for `variant` in repetition `rep`.
    pub fn add(&mut self, variant: &str, metric: &str, unit: &str, rep: usize, value: f64) {
        self.rows.push(Row { bench: self.bench.clone(), variant: variant.into(), metric: metric.into(), unit: unit.into(), rep, value });
    }

    /// The figures by metric, in first-seen order, each with its variants'
    /// values in first-seen order.
    fn metrics(&self) -> Vec<Metric> {
        let mut out: Vec<Metric> = Vec::new();
        for r in &self.rows {
            let i = match out.iter().position(|m| m.name == r.metric) {
                Some(i) => i,
                None => {
                    out.push(Metric { name: r.metric.clone(), unit: r.unit.clone(), variants: Vec::new() });
                    out.len() - 1
                }
            };
            let variants = &mut out[i].variants;
            match variants.iter_mut().find(|(v, _)| *v == r.variant) {
                Some((_, values)) => values.push(r.value),
                None => variants.push((r.variant.clone(), vec![r.value])),
            }
        }
        out
    }

    /// Prints median and range of every metric of every variant (see
    /// [`crate::print_spread`]) with `decimals` digits, then writes the
    /// results if [`RESULTS_ENV`] is set. Errors: the directory, CSV or
    /// plot cannot be written (e.g. the plot font is missing).
    pub fn finish(&self, decimals: usize) -> Result<()> {
        let metrics = self.metrics();
        for m in &metrics {
            let unit = if m.unit.is_empty() { String::new() } else { format!(" {}", m.unit) };
            for (variant, values) in &m.variants {
                crate::print_spread(&format!("{variant}, {}", m.name), values, &unit, decimals);
            }
        }
        let Some(dir) = std::env::var_os(RESULTS_ENV).map(PathBuf::from) else { return Ok(()) };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let csv_path = dir.join(format!("{}.csv", self.bench));
        let mut w = csv::Writer::from_path(&csv_path).with_context(|| format!("create {}", csv_path.display()))?;
        for r in &self.rows {
            w.serialize(r)?;
        }
        w.flush()?;
        for m in &metrics {
            let svg = dir.join(format!("{}-{}.svg", self.bench, slug(&m.name)));
            let y = if m.unit.is_empty() { m.name.clone() } else { format!("{} ({})", m.name, m.unit) };
            socket_intents::plot::boxplot(&svg, &format!("{}: {}", self.bench, m.name), &y, &m.variants)?;
        }
        println!("results: {} and {} plots in {}", csv_path.display(), metrics.len(), dir.display());
        Ok(())
    }
}

/// `metric` as a file-name part: lower-case letters and digits, one `-`
/// for each run of anything else ("share of dsl + lte" → "share-of-dsl-lte").
fn slug(metric: &str) -> String {
    let lower: String = metric.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { ' ' }).collect();
    lower.split_whitespace().collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_keep_words_and_drop_the_rest() {
        assert_eq!(super::slug("share of dsl + lte alone"), "share-of-dsl-lte-alone");
        assert_eq!(super::slug("chunks on time (of 20)"), "chunks-on-time-of-20");
    }
}
