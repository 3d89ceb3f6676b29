//! Run reports: every run samples the servers' CPU and memory from /proc over its whole
//! duration, then writes `<name>.json` (the report with its timeline), `<name>.md` (a
//! summary table) and `<name>.svg` (CPU and memory over time) when `--out` is given.

use parking_lot::Mutex;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One sample of the servers under test.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// CPU seconds used since the run started (all sampled processes).
    pub cpu: f64,
    /// Resident memory, bytes.
    pub rss: u64,
}

/// Samples `pids` every 500 ms until dropped.
pub struct Timeline {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    /// Starts sampling.
    pub fn start(pids: Vec<u32>) -> Timeline {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s2 = samples.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let cpu0 = crate::proc_sample(&pids).map(|s| s.1).unwrap_or(0.0);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if let Ok((rss, cpu)) = crate::proc_sample(&pids) {
                    s2.lock().push(Sample { t: t0.elapsed().as_secs_f64(), cpu: cpu - cpu0, rss });
                }
            }
        });
        Timeline { samples, task }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().clone()
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Flattens a report's numbers into `(key, value)` rows for the Markdown table.
fn rows(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "timeline" || k == "samples" {
                    continue;
                }
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                rows(&key, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            let s = match n.as_f64() {
                Some(f) if n.is_f64() => {
                    if f.abs() >= 100.0 {
                        format!("{f:.0}")
                    } else {
                        format!("{f:.3}")
                    }
                }
                _ => n.to_string(),
            };
            out.push((prefix.to_owned(), s));
        }
        serde_json::Value::Null => {}
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The Markdown summary of a report.
pub fn markdown(name: &str, command: &str, report: &serde_json::Value) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {name}\n");
    let _ = writeln!(s, "Command: `{command}`\n");
    let _ = writeln!(s, "Machine: {}\n", machine());
    let _ = writeln!(s, "| measure | value |\n|---|---|");
    let mut r = Vec::new();
    rows("", report, &mut r);
    for (k, v) in r {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s, "\n![CPU and memory over the run]({name}.svg)");
    s
}

/// CPU (cores busy) and resident memory over time, as an SVG of two charts.
pub fn svg(title: &str, samples: &[Sample]) -> String {
    let (w, h, pad) = (720.0, 180.0, 40.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * h + 3.0 * pad
    );
    let _ = write!(s, r#"<text x="{pad}" y="20">{}</text>"#, xml(title));
    let cores: Vec<(f64, f64)> =
        samples.windows(2).map(|p| (p[1].t, (p[1].cpu - p[0].cpu) / (p[1].t - p[0].t).max(1e-3))).collect();
    let mem: Vec<(f64, f64)> = samples.iter().map(|p| (p.t, p.rss as f64 / 1e6)).collect();
    chart(&mut s, "server CPU (cores busy)", &cores, pad, pad, w - 2.0 * pad, h);
    chart(&mut s, "server resident memory (MB)", &mem, pad, 2.0 * pad + h, w - 2.0 * pad, h);
    s.push_str("</svg>\n");
    s
}

fn chart(s: &mut String, label: &str, pts: &[(f64, f64)], x0: f64, y0: f64, w: f64, h: f64) {
    let tmax = pts.iter().map(|p| p.0).fold(1e-3, f64::max);
    let vmax = pts.iter().map(|p| p.1).fold(1e-3, f64::max) * 1.1;
    let _ = write!(s, r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##);
    let _ = write!(
        s,
        r#"<text x="{}" y="{}">{} (max {:.2}; {:.0} s)</text>"#,
        x0 + 4.0,
        y0 + 14.0,
        xml(label),
        vmax / 1.1,
        tmax
    );
    let path: Vec<String> =
        pts.iter().map(|(t, v)| format!("{:.1},{:.1}", x0 + t / tmax * w, y0 + h - v / vmax * h)).collect();
    let _ = write!(s, r##"<polyline fill="none" stroke="#2f4858" stroke-width="1.5" points="{}"/>"##, path.join(" "));
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The machine, for reports: CPU model and count, memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let n = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{n} × {}, {:.0} GiB", model.unwrap_or_else(|| "unknown CPU".into()), kb as f64 / 1048576.0)
}

/// Writes the three files of a run into `dir`.
pub fn write(
    dir: &Path,
    name: &str,
    command: &str,
    report: &serde_json::Value,
    samples: &[Sample],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(report)?)?;
    std::fs::write(dir.join(format!("{name}.md")), markdown(name, command, report))?;
    std::fs::write(dir.join(format!("{name}.svg")), svg(name, samples))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_render_tables_and_charts() {
        let r = serde_json::json!({"scenario": "x", "lat": {"p50": 3, "p99": 9}, "ratio": 1.94, "timeline": [1, 2]});
        let md = markdown("x", "preau-load --scenario x", &r);
        assert!(md.contains("| lat.p99 | 9 |") && md.contains("| ratio | 1.940 |") && !md.contains("timeline"));
        let samples = [Sample { t: 0.5, cpu: 0.2, rss: 10_000_000 }, Sample { t: 1.0, cpu: 0.6, rss: 12_000_000 }];
        let svg = svg("x", &samples);
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.trim_end().ends_with("</svg>"));
    }
}
