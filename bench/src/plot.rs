//! The charts of a report, as SVG: bars for CPU per request and throughput, and latency
//! against offered load.

use std::path::Path;

use plotters::prelude::*;

const COLORS: [RGBColor; 4] =
    [RGBColor(0x1b, 0x9e, 0x77), RGBColor(0xd9, 0x5f, 0x02), RGBColor(0x75, 0x70, 0xb3), RGBColor(0x66, 0x66, 0x66)];

/// A bar chart of one value per name.
pub fn bars(path: &Path, title: &str, unit: &str, values: &[(String, f64)]) -> Result<(), String> {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = values.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9) * 1.2;
    let n = values.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..max)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc(unit).draw().map_err(|e| e.to_string())?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, (_, v))| {
            Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], COLORS[i % COLORS.len()].filled())
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            values.iter().enumerate().map(|(i, (_, v))| {
                Text::new(format!("{v:.1}"), (i as f64 + 0.35, *v + max * 0.02), ("sans-serif", 16))
            }),
        )
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, (name, _))| {
            Text::new(name.clone(), (i as f64 + 0.17, max * 0.06), ("sans-serif", 15).into_font().color(&WHITE))
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// One latency curve per series: (offered req/s, latency µs) points.
pub fn curves(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<(), String> {
    let root = SVGBackend::new(path, (820, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xmax = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(0.0, f64::max).max(1.0) * 1.05;
    let ymax = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(0.0, f64::max).max(1.0);
    let ymin = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(f64::MAX, f64::min).clamp(1.0, ymax);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (ymin * 0.8..ymax * 1.5).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("offered load (req/s)")
        .y_desc("latency (µs, log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in series.iter().enumerate() {
        // Series come in (p99, p99.9) pairs per target: one colour per target, p99.9 thinner.
        let color = COLORS[(i / 2) % COLORS.len()];
        let style = if name.contains("p99.9") { color.mix(0.6).stroke_width(1) } else { color.stroke_width(2) };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
