//! Boxplots of completion times per variant (plotters), as the paper's
//! Fig. 5 and 6.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

/// Font the SVG text is measured with (Debian's fonts-dejavu-core).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One box per `(label, seconds)` series, drawn to `path` (SVG).
/// Errors: the font is missing or the file cannot be written.
pub fn boxplot(path: &Path, title: &str, y_desc: &str, series: &[(String, Vec<f64>)]) -> Result<()> {
    let font = std::fs::read(FONT).with_context(|| format!("read {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice())).map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let ymax = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(0.1) * 1.1;
    let labels: Vec<String> = series.iter().map(|(l, _)| l.clone()).collect();
    let root = SVGBackend::new(path, (200 + 170 * series.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(labels.into_segmented(), 0f32..ymax as f32)?;
    // Labels as written (a segment's default format quotes them).
    let label = |v: &SegmentValue<&String>| match v {
        SegmentValue::Exact(l) | SegmentValue::CenterOf(l) => l.to_string(),
        SegmentValue::Last => String::new(),
    };
    chart.configure_mesh().y_desc(y_desc).x_label_formatter(&label).light_line_style(WHITE).draw()?;
    chart.draw_series(series.iter().map(|(l, v)| Boxplot::new_vertical(SegmentValue::CenterOf(l), &Quartiles::new(v)).width(30)))?;
    root.present()?;
    Ok(())
}
