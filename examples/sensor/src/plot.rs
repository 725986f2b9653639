//! SVG line plot of missed deadlines per interval (plotters), as in
//! Q.Sockets Fig. 7.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::Interval;

/// Font the SVG text is measured with (Debian's fonts-dejavu-core).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws late + lost readings per 5 s interval, one line per run, to `path`.
pub fn missed_per_interval(path: &Path, title: &str, runs: &[(&str, &[Interval])]) -> Result<()> {
    let font = std::fs::read(FONT).with_context(|| format!("read {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice())).map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let n = runs.iter().map(|(_, r)| r.len()).max().unwrap_or(1) as u32;
    let ymax = runs.iter().flat_map(|(_, r)| r.iter().map(|i| i.late + i.lost)).max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0u32..n.saturating_sub(1).max(1), 0u32..ymax + ymax / 10 + 1)?;
    chart.configure_mesh().x_desc("5-second interval").y_desc("readings late or lost").draw()?;
    let colors = [RED, BLUE, GREEN, BLACK];
    for (k, (name, data)) in runs.iter().enumerate() {
        let c = colors[k % colors.len()];
        chart
            .draw_series(LineSeries::new(data.iter().map(|i| (i.index, i.late + i.lost)), c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
