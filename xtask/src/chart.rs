//! The durable-throughput chart of BENCHMARKS.md, drawn from criterion's own results
//! (`target/criterion/<group>/<function>/new/estimates.json`) as a dependency-free SVG:
//! events/s against appenders, both axes logarithmic, one line per backend.

use std::fmt::Write as _;
use std::path::Path;

/// A line of the chart: its name, colour, and each point's appenders with the criterion
/// benchmark directory (group/function) that measured it.
type Series = (&'static str, &'static str, &'static [(u64, &'static str)]);

const SERIES: [Series; 5] = [
    (
        "fsync floor (one write + fdatasync)",
        "#999999",
        &[
            (1, "fsync_preallocated/bytes=250"),
            (256, "fsync_preallocated/bytes=65536"),
        ],
    ),
    (
        "group-commit floor (no log work)",
        "#9467bd",
        &[
            (1, "groupcommit_floor/appenders=1"),
            (16, "groupcommit_floor/appenders=16"),
            (256, "groupcommit_floor/appenders=256"),
        ],
    ),
    (
        "evsource log",
        "#1f77b4",
        &[
            (1, "append_log/appenders=1"),
            (16, "append_log/appenders=16"),
            (256, "append_log/appenders=256"),
        ],
    ),
    (
        "SQLite (WAL, synchronous=FULL)",
        "#ff7f0e",
        &[
            (1, "append_sqlite/appenders=1"),
            (16, "append_sqlite/appenders=16"),
        ],
    ),
    (
        "PostgreSQL (unique stream_id, version)",
        "#2ca02c",
        &[
            (1, "append_postgres/appenders=1"),
            (16, "append_postgres/appenders=16"),
        ],
    ),
];

/// The plot's width in a chart `width` wide with margins `left` and `right`.
fn plot_w_of(width: f64, left: f64, right: f64) -> f64 {
    width - left - right
}

/// One measured point: appenders and events per second.
type Point = (u64, f64);

/// Reads the events/s of benchmark directory `bench` (`group/function`), whose iteration
/// appends `events` events, from criterion's estimates: the time per iteration criterion
/// prints (its slope estimate, or the mean where it sampled flat).
fn throughput(criterion: &Path, bench: &str, events: u64) -> Option<f64> {
    let path = criterion.join(bench).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimate = |name: &str| -> Option<f64> {
        let from = &text[text.find(&format!("\"{name}\":{{"))?..];
        let value = &from[from.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
        value[..value.find([',', '}'])?].trim().parse().ok()
    };
    let nanos = estimate("slope").or_else(|| estimate("mean"))?;
    (nanos > 0.0).then(|| events as f64 * 1e9 / nanos)
}

/// The chart, or `None` when criterion has no durable append results yet.
pub fn durable_throughput_svg(criterion: &Path) -> Option<String> {
    let series: Vec<(&str, &str, Vec<Point>)> = SERIES
        .iter()
        .map(|(name, colour, benches)| {
            let points = benches
                .iter()
                .filter_map(|&(n, bench)| throughput(criterion, bench, n).map(|t| (n, t)))
                .collect();
            (*name, *colour, points)
        })
        .collect();
    if series.iter().all(|(_, _, points)| points.is_empty()) {
        return None;
    }
    let (width, height) = (920.0, 440.0);
    let (left, right, top, bottom) = (90.0, 370.0, 50.0, 60.0);
    // The legend stands clear of the value labels beside the 256-appender points.
    let legend_x = left + plot_w_of(width, left, right) + 70.0;
    let (plot_w, plot_h) = (plot_w_of(width, left, right), height - top - bottom);
    // x: log2(appenders) over 1..256; y: log10(events/s) over whole decades.
    let x = |n: u64| left + (n as f64).log2() / 8.0 * plot_w;
    let values = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, t)| t));
    let low = values.clone().fold(f64::INFINITY, f64::min).log10().floor();
    let high = values.fold(0.0, f64::max).log10().ceil().max(low + 1.0);
    let y = |t: f64| top + plot_h - (t.log10() - low) / (high - low) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="{left}" y="28" font-size="15">Durable appends: events/s vs concurrent appenders (log scales)</text>"#
    );
    for decade in low as i32..=high as i32 {
        let t = 10f64.powi(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            y(t),
            y(t),
            left - 8.0,
            y(t) + 4.0,
            human(t)
        );
    }
    for n in [1u64, 16, 256] {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{n}</text>"##,
            x(n),
            x(n),
            top + plot_h,
            x(n),
            top + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">appenders (each waits for its acknowledgement: fsync'd or committed)</text>"#,
        left + plot_w / 2.0,
        height - 18.0
    );
    // Value labels are placed after every line, spread apart where points lie close.
    let mut labels: Vec<(u64, f64, &str, String)> = Vec::new();
    for (row, (name, colour, points)) in series.iter().enumerate() {
        let legend_y = top + 10.0 + row as f64 * 22.0;
        let label = if points.is_empty() {
            format!("{name}: not measured")
        } else {
            (*name).to_owned()
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            legend_x,
            legend_y - 4.0,
            legend_x + 20.0,
            legend_y
        );
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|&(n, t)| format!("{:.1},{:.1}", x(n), y(t)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(n, t) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}"/>"#,
                x(n),
                y(t),
            );
            labels.push((n, y(t) - 7.0, *colour, human(t)));
        }
    }
    for (n, label_y, colour, text) in spread_labels(labels) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{label_y:.1}" fill="{colour}">{text}</text>"#,
            x(n) + 7.0,
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

/// Moves the value labels of each column (same appenders) apart, keeping their order
/// top to bottom, so that no two are closer than a line of text.
fn spread_labels(mut labels: Vec<(u64, f64, &str, String)>) -> Vec<(u64, f64, &str, String)> {
    const LINE: f64 = 13.0;
    labels.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    for i in 1..labels.len() {
        if labels[i].0 == labels[i - 1].0 && labels[i].1 < labels[i - 1].1 + LINE {
            labels[i].1 = labels[i - 1].1 + LINE;
        }
    }
    labels
}

/// 1234567.0 → "1.23M", 4267.0 → "4.27k".
fn human(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.3}M", v / 1e6),
        v if v >= 1e3 => format!("{:.3}k", v / 1e3),
        v => format!("{v:.0}"),
    }
    .replace(".000", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_comes_from_the_estimate_criterion_prints() {
        let dir = std::env::temp_dir().join(format!("xtask-chart-{}", std::process::id()));
        let point = dir.join("append_log/appenders=16/new");
        std::fs::create_dir_all(&point).unwrap();
        std::fs::write(
            point.join("estimates.json"),
            r#"{"mean":{"confidence_interval":{"lower_bound":1.0},"point_estimate":1000000.0,"standard_error":2.0},"median":{"point_estimate":5.0}}"#,
        )
        .unwrap();
        assert_eq!(
            throughput(&dir, "append_log/appenders=16", 16),
            Some(16_000.0),
            "the mean where there is no slope"
        );
        assert_eq!(throughput(&dir, "append_log/appenders=256", 256), None);
        let slope = dir.join("append_log/appenders=1/new");
        std::fs::create_dir_all(&slope).unwrap();
        std::fs::write(
            slope.join("estimates.json"),
            r#"{"mean":{"point_estimate":4000.0},"slope":{"confidence_interval":{"upper_bound":3.0},"point_estimate":2000.0}}"#,
        )
        .unwrap();
        assert_eq!(
            throughput(&dir, "append_log/appenders=1", 1),
            Some(500_000.0)
        );
        let svg = durable_throughput_svg(&dir).expect("one point is enough");
        assert!(
            svg.contains("16k") && svg.contains("SQLite (WAL, synchronous=FULL): not measured")
        );
        assert_eq!(durable_throughput_svg(&dir.join("nothing")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Labels of one column closer than a line are pushed down in their order; labels of
    /// other columns, and ones already far enough apart, stay where they are.
    #[test]
    fn close_labels_of_one_column_are_spread_apart() {
        let label = |n: u64, y: f64, text: &str| (n, y, "#000", text.to_owned());
        let spread = spread_labels(vec![
            label(16, 100.0, "b"),
            label(1, 104.0, "other column"),
            label(16, 98.0, "a"),
            label(16, 150.0, "far"),
        ]);
        let placed: Vec<(u64, f64, &str)> = spread
            .iter()
            .map(|(n, y, _, text)| (*n, *y, text.as_str()))
            .collect();
        assert_eq!(
            placed,
            [
                (1, 104.0, "other column"),
                (16, 98.0, "a"),
                (16, 111.0, "b"),
                (16, 150.0, "far")
            ]
        );
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(human(1_420_000.0), "1.420M");
        assert_eq!(human(4_267.4), "4.267k");
        assert_eq!(human(16_000.0), "16k");
        assert_eq!(human(999.0), "999");
    }
}
