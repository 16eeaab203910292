//! The charts of a report, as SVG: horizontal bars for CPU per request and throughput, and
//! latency against offered load. Each target keeps one colour in every chart.

use std::path::Path;

use plotters::prelude::*;

/// The colour of a target, the same in every chart (Dark2 palette).
fn color_of(target: &str) -> RGBColor {
    match target {
        "coregate-io_uring" => RGBColor(0xd9, 0x5f, 0x02),
        "coregate-epoll" => RGBColor(0x75, 0x70, 0xb3),
        "coregate-io_uring-policies" => RGBColor(0xe7, 0x29, 0x8a),
        "nginx" => RGBColor(0x1b, 0x9e, 0x77),
        "coregate-io_uring-cache" => RGBColor(0x66, 0xa6, 0x1e),
        "nginx-cache" => RGBColor(0x1f, 0x78, 0xb4),
        "coregate-io_uring-https" => RGBColor(0xe6, 0xab, 0x02),
        "nginx-https" => RGBColor(0x7f, 0x7f, 0x7f),
        "haproxy" => RGBColor(0x66, 0x66, 0x66),
        "direct" => RGBColor(0xe6, 0xab, 0x02),
        _ => RGBColor(0xa6, 0x76, 0x1d),
    }
}

/// A horizontal bar chart of one value per target, names on the left.
pub fn bars(path: &Path, title: &str, unit: &str, values: &[(String, f64)]) -> Result<(), String> {
    let root = SVGBackend::new(path, (760, 80 + 48 * values.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = values.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9) * 1.15;
    let n = values.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(210)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)
        .map_err(|e| e.to_string())?;
    let label = |y: &f64| {
        // Bar i spans [n-1-i, n-i): the first value on top; label each bar at its middle.
        let i = n as f64 - 0.5 - *y;
        if (i - i.round()).abs() < 1e-6 && i >= 0.0 {
            values.get(i.round() as usize).map(|(name, _)| name.clone()).unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(2 * n + 1)
        .y_label_formatter(&label)
        .y_label_style(("sans-serif", 15))
        .x_desc(unit)
        .draw()
        .map_err(|e| e.to_string())?;
    let top = |i: usize| (n - i) as f64;
    chart
        .draw_series(
            values.iter().enumerate().map(|(i, (name, v))| {
                Rectangle::new([(0.0, top(i) - 0.85), (*v, top(i) - 0.15)], color_of(name).filled())
            }),
        )
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            values
                .iter()
                .enumerate()
                .map(|(i, (_, v))| Text::new(format_value(*v), (*v + max * 0.01, top(i) - 0.62), ("sans-serif", 15))),
        )
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn format_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One latency curve per series: (offered req/s, latency µs) points. Series are named
/// "TARGET p99" or "TARGET p99.9": one colour per target, p99 solid, p99.9 dashed.
pub fn curves(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<(), String> {
    let root = SVGBackend::new(path, (860, 500)).into_drawing_area();
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
    for (name, points) in series {
        let (target, tail) = name.rsplit_once(' ').unwrap_or((name, ""));
        let color = color_of(target);
        let dashed = tail == "p99.9";
        let anno = if dashed {
            chart.draw_series(DashedLineSeries::new(points.iter().copied(), 6, 4, color.stroke_width(2)))
        } else {
            chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
        }
        .map_err(|e| e.to_string())?;
        // In the legend a dashed series is a short stroke, a solid one a long one.
        let len = if dashed { 7 } else { 18 };
        anno.label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + len, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
