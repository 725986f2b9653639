//! SVG line charts (plotters) for the DWCS experiments: frames per second
//! per stream (Q.Sockets Fig. 6) and misses per window (window test).
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

/// Font the SVG text is measured with (Debian's fonts-dejavu-core).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of a chart: legend label and (x, y) points.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Draw dashed (limits, constraints) instead of solid.
    pub dashed: bool,
    /// Palette index; series with the same index share a colour.
    pub color: usize,
}

/// Draws `series` into a 900×500 SVG at `path`, axes from 0 to the data's
/// maxima. Errors if the font ([`FONT`]) cannot be read or the SVG cannot be
/// written.
pub fn line_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let font = std::fs::read(FONT).with_context(|| format!("read {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice())).map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let xmax = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
    let palette = [RED, BLUE, GREEN, MAGENTA, BLACK, CYAN];
    for s in series {
        let c = palette[s.color % palette.len()];
        let style = c.stroke_width(if s.dashed { 1 } else { 2 });
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 6, 4, style))?;
            continue;
        }
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
