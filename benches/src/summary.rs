//! `trestle-bench summarize`: comparison result files → a Markdown table and an SVG plot.
//!
//! The table quotes, per workload, both targets' median throughput (entities per second: a batch counts
//! its 100 entities, a query page its 1,000), the ratio, and the median p50/p99/p99.9 latencies. The plot
//! (self-written SVG, no plotting library: two log-scale panels of grouped bars) shows the same
//! throughputs and the p50 and p99 latencies, so a reader sees at a glance where each target stands.

use std::fmt::Write as _;

use crate::report::{CompareReport, Summary, fmt_us};

/// The Markdown table of `reports` (one row per comparison).
pub fn markdown(reports: &[CompareReport]) -> String {
    let mut out = String::new();
    let (a, b) = labels(reports);
    let _ = writeln!(
        out,
        "| workload | {a} entities/s | {b} entities/s | {a}/{b} | {a} p50 | {a} p99 | {a} p99.9 | {b} p50 | {b} p99 | {b} p99.9 | errors ({a}/{b}) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in reports {
        let (x, y) = (&r.a_median, &r.b_median);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            r.workload,
            x.entities_per_sec,
            if r.b.is_empty() {
                "–".to_string()
            } else {
                format!("{:.0}", y.entities_per_sec)
            },
            r.throughput_ratio
                .map_or("–".to_string(), |v| format!("**{v:.2}×**")),
            fmt_us(x.p50_us as u64),
            fmt_us(x.p99_us as u64),
            fmt_us(x.p999_us as u64),
            lat(&r.b, y.p50_us),
            lat(&r.b, y.p99_us),
            lat(&r.b, y.p999_us),
            x.errors,
            y.errors,
        );
    }
    let rounds = reports.iter().map(|r| r.a.len()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "\nMedians of {rounds} rounds per target (A and B in turns); latencies are per operation."
    );
    out
}

fn lat(runs: &[crate::report::RunReport], us: f64) -> String {
    if runs.is_empty() {
        "–".into()
    } else {
        fmt_us(us as u64)
    }
}

fn labels(reports: &[CompareReport]) -> (String, String) {
    reports
        .first()
        .map(|r| (r.a_label().to_string(), r.b_label().to_string()))
        .unwrap_or_else(|| ("A".into(), "B".into()))
}

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const COLORS: [&str; 4] = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78"];

/// A log-scale panel of grouped bars: `groups` along x, one bar per series in each group.
struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    groups: Vec<String>,
    series: Vec<(String, Vec<f64>)>,
    /// A label above each group (the A/B ratio), if any.
    notes: Vec<String>,
}

impl Panel<'_> {
    fn render(&self, out: &mut String, top: f64) {
        let values = self.series.iter().flat_map(|(_, v)| v.iter().copied());
        let positive: Vec<f64> = values.filter(|v| *v > 0.0).collect();
        let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = positive.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = if positive.is_empty() {
            (0.0, 1.0)
        } else {
            (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            )
        };
        let plot_top = top + 40.0;
        let plot_h = PANEL_H - 90.0;
        let y = |v: f64| {
            let l = if v > 0.0 { v.log10() } else { lo };
            plot_top + plot_h * (1.0 - (l - lo) / (hi - lo))
        };
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
            top + 22.0,
            esc(self.title)
        );
        for d in (lo as i32)..=(hi as i32) {
            let v = 10f64.powi(d);
            let yy = y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                esc(&format_tick(v, self.unit))
            );
        }
        let n = self.groups.len().max(1) as f64;
        let group_w = (WIDTH - LEFT - RIGHT) / n;
        let bar_w = (group_w * 0.8) / self.series.len().max(1) as f64;
        for (g, name) in self.groups.iter().enumerate() {
            let gx = LEFT + group_w * g as f64 + group_w * 0.1;
            for (s, (label, vals)) in self.series.iter().enumerate() {
                let v = vals.get(g).copied().unwrap_or(0.0);
                if v <= 0.0 {
                    continue;
                }
                let (x, yy) = (gx + bar_w * s as f64, y(v));
                let _ = writeln!(
                    out,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                    (bar_w - 2.0).max(1.0),
                    (plot_top + plot_h - yy).max(0.0),
                    COLORS[s % COLORS.len()],
                    esc(name),
                    esc(label),
                    esc(&format_tick(v, self.unit))
                );
            }
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
                gx + group_w * 0.4,
                plot_top + plot_h + 16.0,
                esc(name)
            );
            if let Some(note) = self.notes.get(g).filter(|n| !n.is_empty()) {
                let top_value = self
                    .series
                    .iter()
                    .filter_map(|(_, v)| v.get(g).copied())
                    .fold(0.0, f64::max);
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"#,
                    gx + group_w * 0.4,
                    (y(top_value) - 6.0).max(plot_top - 4.0),
                    esc(note)
                );
            }
        }
        let mut lx = LEFT;
        for (s, (label, _)) in self.series.iter().enumerate() {
            let ly = plot_top + plot_h + 34.0;
            let _ = writeln!(
                out,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}" font-size="12">{}</text>"#,
                ly - 10.0,
                COLORS[s % COLORS.len()],
                lx + 16.0,
                esc(label)
            );
            lx += 30.0 + 7.0 * label.chars().count() as f64;
        }
    }
}

/// The SVG plot: throughput per workload, then p50 and p99 latency per workload.
pub fn svg(reports: &[CompareReport], title: &str) -> String {
    let (a, b) = labels(reports);
    let groups: Vec<String> = reports.iter().map(|r| r.workload.clone()).collect();
    let col = |f: fn(&Summary) -> f64, pick_b: bool| -> Vec<f64> {
        reports
            .iter()
            .map(|r| {
                if pick_b {
                    f(&r.b_median)
                } else {
                    f(&r.a_median)
                }
            })
            .collect()
    };
    let throughput = Panel {
        title: "Throughput (entities/s, log scale; higher is better)",
        unit: "/s",
        notes: reports
            .iter()
            .map(|r| {
                r.throughput_ratio
                    .map_or(String::new(), |v| format!("{v:.2}×"))
            })
            .collect(),
        groups: groups.clone(),
        series: vec![
            (a.clone(), col(|s| s.entities_per_sec, false)),
            (b.clone(), col(|s| s.entities_per_sec, true)),
        ],
    };
    let latency = Panel {
        title: "Latency per operation: a batch or a query page is one operation (log scale; lower is better)",
        unit: "us",
        notes: Vec::new(),
        groups,
        series: vec![
            (format!("{a} p50"), col(|s| s.p50_us, false)),
            (format!("{a} p99"), col(|s| s.p99_us, false)),
            (format!("{b} p50"), col(|s| s.p50_us, true)),
            (format!("{b} p99"), col(|s| s.p99_us, true)),
        ],
    };
    let height = 2.0 * PANEL_H + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="17" font-weight="bold">{}</text>"#,
        esc(title)
    );
    throughput.render(&mut out, 30.0);
    latency.render(&mut out, 30.0 + PANEL_H);
    out.push_str("</svg>\n");
    out
}

fn format_tick(v: f64, unit: &str) -> String {
    match unit {
        "us" => fmt_us(v as u64),
        _ if v >= 1e6 => format!("{:.1}M{unit}", v / 1e6),
        _ if v >= 1e3 => format!("{:.0}k{unit}", v / 1e3),
        _ => format!("{v:.0}{unit}"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CompareReport, Latency, RunReport};

    fn run(label: &str, eps: f64, p99: u64) -> RunReport {
        let mut r: RunReport = serde_json::from_value(serde_json::json!({
            "label": label, "target": "t", "protocol": "rest",
            "workload": {"kind": "read", "entity_size": 1024, "partitions": 1, "records": 1,
                "distribution": "uniform", "zipf_theta": 0.99, "page_size": 1, "query_partitions": 1,
                "batch_size": 1, "run_id": "x"},
            "concurrency": 64, "rate": null, "started_at": "", "seconds": 1.0, "ops": 1, "entities": 1,
            "errors": {}, "ops_per_sec": eps, "entities_per_sec": eps,
            "latency": {"p50_us": 1, "p90_us": 1, "p99_us": 1, "p999_us": 1, "max_us": 1, "mean_us": 1.0}
        }))
        .unwrap();
        r.latency = Latency {
            p50_us: p99 / 2,
            p99_us: p99,
            ..r.latency
        };
        r
    }

    fn reports() -> Vec<CompareReport> {
        vec![
            CompareReport::new(
                "read",
                vec![run("trestle", 5000.0, 9000)],
                vec![run("azurite", 1000.0, 60_000)],
            ),
            CompareReport::new(
                "insert",
                vec![run("trestle", 2000.0, 40_000)],
                vec![run("azurite", 1500.0, 70_000)],
            ),
        ]
    }

    #[test]
    fn the_table_has_a_row_per_workload_with_the_ratio() {
        let md = markdown(&reports());
        assert!(md.starts_with(
            "| workload | trestle entities/s | azurite entities/s | trestle/azurite |"
        ));
        assert!(md.contains("| read | 5000 | 1000 | **5.00×** | 4.5ms | 9.0ms |"));
        assert!(md.contains("| insert | 2000 | 1500 | **1.33×** |"));
    }

    #[test]
    fn the_plot_is_well_formed_svg_with_every_bar() {
        let s = svg(&reports(), "Trestle vs <Azurite>");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("Trestle vs &lt;Azurite&gt;"));
        // 2 workloads × (2 throughput bars + 4 latency bars) + 6 legend swatches.
        assert_eq!(s.matches("<rect x=").count(), 2 * 6 + 6);
        assert_eq!(
            s.matches("<rect").count(),
            2 * 6 + 6 + 1,
            "and the background"
        );
    }
}
