//! `summary`: reads the `<name>.json` reports of a folder (a `quick.sh` run) and writes
//! `report.md`: each scenario's headline figures, and each figure next to its reference
//! measured in the same run, as a ratio. Prints the ratios.

use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;

fn load(dir: &Path, name: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn f(v: &serde_json::Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_f64()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        // Tiny ratios as fractions, so that they do not read as zero.
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 && a / b < 0.05 => format!("1/{:.0}", b / a),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.abs() >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "n/a".into(),
    }
}

/// Deliveries per second, from the report or from its deliveries and duration.
fn rate(v: &serde_json::Value) -> Option<f64> {
    f(v, &["deliveries_per_second"]).or_else(|| Some(f(v, &["deliveries"])? / f(v, &["seconds"]).filter(|s| *s > 0.0)?))
}

/// Writes `dir/report.md` and returns it.
pub fn summarize(dir: &Path) -> anyhow::Result<String> {
    let mut md = String::new();
    let _ = writeln!(md, "# Préau load run: {}\n", dir.file_name().and_then(|n| n.to_str()).unwrap_or("run"));
    let _ = writeln!(
        md,
        "Machine: {}. Each scenario's full report: `<name>.md`, `<name>.json`, `<name>.svg`.\n",
        crate::report::machine()
    );

    let mut printed = Vec::new();
    let (g, r, n) = (load(dir, "fanout-gateway"), load(dir, "fanout-reference"), load(dir, "fanout-nats"));
    if g.is_some() || r.is_some() || n.is_some() {
        let _ = writeln!(md, "## Fan-out against its references (same run, same tool)\n");
        let _ = writeln!(
            md,
            "| figure | preau-gateway | bare broadcast | ratio | NATS (WebSocket) | ratio |\n|---|---|---|---|---|---|"
        );
        let rows: [(&str, &[&str]); 4] = [
            ("server CPU µs per delivery", &["gateway_cpu_us_per_delivery"]),
            ("send-to-deliver p50 (µs)", &["send_to_deliver_us", "p50"]),
            ("send-to-deliver p99 (µs)", &["send_to_deliver_us", "p99"]),
            ("send-to-deliver p99.9 (µs)", &["send_to_deliver_us", "p999"]),
        ];
        for (label, path) in rows {
            let (gv, rv, nv) = (
                g.as_ref().and_then(|v| f(v, path)),
                r.as_ref().and_then(|v| f(v, path)),
                n.as_ref().and_then(|v| f(v, path)),
            );
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} |",
                num(gv),
                num(rv),
                ratio(gv, rv),
                num(nv),
                ratio(gv, nv)
            );
            printed.push(format!("fanout {label}: gateway/bare {} gateway/NATS {}", ratio(gv, rv), ratio(gv, nv)));
        }
        for (name, v) in [("gateway", &g), ("bare broadcast", &r), ("NATS", &n)] {
            if let Some(v) = v {
                let _ = writeln!(
                    md,
                    "\n{name}: {} deliveries, {} lost, {} duplicated.",
                    num(f(v, &["deliveries"])),
                    num(f(v, &["lost"])),
                    num(f(v, &["duplicated"]))
                );
            }
        }
    }
    let _ = writeln!(md, "\n## Scenarios\n");
    let _ =
        writeln!(md, "| scenario | headline | lost | server CPU | latency p50 / p99 / p99.9 |\n|---|---|---|---|---|");
    let line =
        |md: &mut String, name: &str, head: String, lost: Option<f64>, cpu: String, lat: Option<&serde_json::Value>| {
            let lat = lat
                .map(|l| {
                    format!(
                        "{} / {} / {} ms",
                        num(f(l, &["p50"]).map(|x| x / 1000.0)),
                        num(f(l, &["p99"]).map(|x| x / 1000.0)),
                        num(f(l, &["p999"]).map(|x| x / 1000.0))
                    )
                })
                .unwrap_or_else(|| "n/a".into());
            let _ = writeln!(md, "| {name} | {head} | {} | {cpu} | {lat} |", num(lost));
        };
    if let Some(v) = load(dir, "connections") {
        let head = format!(
            "{} open, {} bytes per connection",
            num(f(&v, &["connections_open"])),
            num(f(&v, &["gateway_bytes_per_connection"]))
        );
        line(
            &mut md,
            "connections",
            head,
            f(&v, &["connections_failed"]),
            format!("{} ms per connection", num(f(&v, &["gateway_cpu_ms_per_connection"]))),
            v.get("connect_latency_us"),
        );
    }
    if let Some(v) = load(dir, "morning-storm") {
        let head = format!(
            "{} users within {} s, {} messages read",
            num(f(&v, &["connections"])),
            num(f(&v, &["within_seconds"])),
            num(f(&v, &["messages_read"]))
        );
        let bad =
            f(&v, &["messages_missing_or_out_of_order"]).unwrap_or(0.0) + f(&v, &["connections_failed"]).unwrap_or(0.0);
        line(
            &mut md,
            "morning-storm (connect to all read)",
            head,
            Some(bad),
            format!("{} ms per user", num(f(&v, &["gateway_cpu_ms_per_user_morning"]))),
            v.get("connect_to_all_read_us"),
        );
    }
    for name in ["forums", "chat", "fanout-gateway"] {
        if let Some(v) = load(dir, name) {
            let head = format!("{} deliveries ({}/s)", num(f(&v, &["deliveries"])), num(rate(&v)));
            line(
                &mut md,
                name,
                head,
                f(&v, &["lost"]),
                format!("{} µs per delivery", num(f(&v, &["gateway_cpu_us_per_delivery"]))),
                v.get("send_to_deliver_us"),
            );
        }
    }
    let (p, j) = (load(dir, "live-class"), load(dir, "live-class-janus"));
    for (name, v) in [("live-class", &p), ("live-class on Janus (reference)", &j)] {
        let Some(v) = v else { continue };
        let head = format!(
            "{} rooms × {} pupils, {} packets/s forwarded, {} MB per peer",
            num(f(v, &["rooms"])),
            num(f(v, &["pupils_per_room"])),
            num(f(v, &["packets_forwarded_per_second"])),
            num(f(v, &["sfu_bytes_per_peer"]).map(|b| b / 1e6))
        );
        line(
            &mut md,
            name,
            head,
            f(v, &["packets_lost"]),
            format!("{} packets per CPU-second", num(f(v, &["sfu_packets_per_cpu_second"]))),
            v.get("publish_to_receive_latency_us"),
        );
    }
    if let Some(v) = &p {
        printed.push(format!(
            "live-class: {} packets per SFU CPU-second, {} MB per peer",
            num(f(v, &["sfu_packets_per_cpu_second"])),
            num(f(v, &["sfu_bytes_per_peer"]).map(|b| b / 1e6))
        ));
    }
    if let (Some(p), Some(j)) = (&p, &j) {
        let _ = writeln!(md, "\n## Live class against Janus videoroom (same run, same clients)\n");
        let _ = writeln!(md, "| figure | preau-sfu | Janus | ratio |\n|---|---|---|---|");
        let rows: [(&str, &[&str]); 6] = [
            ("packets forwarded per second", &["packets_forwarded_per_second"]),
            ("server CPU µs per forwarded packet", &["sfu_cpu_us_per_packet"]),
            ("server memory per peer (bytes)", &["sfu_bytes_per_peer"]),
            ("publish-to-receive p50 (µs)", &["publish_to_receive_latency_us", "p50"]),
            ("publish-to-receive p99 (µs)", &["publish_to_receive_latency_us", "p99"]),
            ("packets lost", &["packets_lost"]),
        ];
        for (label, path) in rows {
            let (pv, jv) = (f(p, path), f(j, path));
            let _ = writeln!(md, "| {label} | {} | {} | {} |", num(pv), num(jv), ratio(pv, jv));
            if label != "packets lost" {
                printed.push(format!("live-class {label}: preau-sfu/Janus {}", ratio(pv, jv)));
            }
        }
    } else {
        let _ = writeln!(
            md,
            "\nThe live-class reference (Janus) did not run: see quick.sh's output and load-tests/README.md."
        );
    }
    std::fs::write(dir.join("report.md"), &md).context("write report.md")?;
    for p in printed {
        println!("{p}");
    }
    Ok(md)
}
