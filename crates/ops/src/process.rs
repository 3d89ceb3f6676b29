//! The process metrics every `/metrics` of Préau ends with, in Prometheus' standard names
//! (`process_*`, as its client libraries write them), and the build's identity
//! (`preau_build_info`). Read from `/proc` at each scrape; elsewhere than Linux only the
//! build information is written.
//!
//! Open file descriptors matter most here: each WebSocket is one, and the operator's limit
//! (`process_max_fds`) caps the connections a node can hold.

use std::fmt::Write;

/// `/proc` reports CPU time in USER_HZ ticks, 100 a second on every Linux port.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc` says of this process now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// When the process started, seconds since the epoch (boot time plus the start's
    /// ticks after boot).
    pub start_time_seconds: f64,
}

impl Sample {
    /// Reads `/proc/self`; `None` where there is no `/proc`.
    pub fn read() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let system = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
        Some(Sample::parse(&stat, &status, &limits, &system, open_fds))
    }

    /// Parses the files (kept apart from the reading, to be tested): `/proc/self/stat`,
    /// `status` and `limits`, and `/proc/stat` (the boot time).
    pub fn parse(stat: &str, status: &str, limits: &str, system: &str, open_fds: u64) -> Sample {
        // The command name (field 2) may hold spaces and parentheses: fields are counted
        // after its last ')'. utime and stime are fields 14 and 15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // `after` starts at field 3 (the state).
        let cpu_seconds = (tick(11) + tick(12)) / TICKS_PER_SECOND;
        let boot = system
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        // starttime is field 22.
        let start_time_seconds = boot + tick(19) / TICKS_PER_SECOND;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l["Max open files".len()..].split_whitespace().next())
            .and_then(|v| v.parse().ok());
        Sample {
            cpu_seconds,
            resident_bytes: kb("VmRSS:") * 1024,
            virtual_bytes: kb("VmSize:") * 1024,
            open_fds,
            max_fds,
            threads: kb("Threads:"),
            start_time_seconds,
        }
    }
}

/// The process metrics and `preau_build_info`, in the Prometheus text format, to append
/// to a recorder's own output. `binary` and `version` label the build; the commit comes
/// from `PREAU_GIT_COMMIT` at build time (the release image sets it).
pub fn render(binary: &str, version: &str) -> String {
    let mut out = String::new();
    let commit = option_env!("PREAU_GIT_COMMIT").unwrap_or("unknown");
    let _ = write!(
        out,
        "# HELP preau_build_info Which build this process runs (always 1; the labels say which).\n\
         # TYPE preau_build_info gauge\n\
         preau_build_info{{binary=\"{binary}\",version=\"{version}\",commit=\"{commit}\"}} 1\n"
    );
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    if let Some(s) = Sample::read() {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{:.2}", s.start_time_seconds),
        );
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            format!("{:.2}", s.cpu_seconds),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            s.resident_bytes.to_string(),
        );
        metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", s.virtual_bytes.to_string());
        metric("process_open_fds", "gauge", "Number of open file descriptors.", s.open_fds.to_string());
        if let Some(m) = s.max_fds {
            metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", m.to_string());
        }
        metric("process_threads", "gauge", "Number of OS threads in the process.", s.threads.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (preau (gw) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000 200";
        let status = "Name:\tpreau\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        let s = Sample::parse(stat, status, limits, "cpu  1 2 3\nbtime 1764750000\n", 17);
        assert_eq!(
            s,
            Sample {
                cpu_seconds: 3.0,
                resident_bytes: 10240 * 1024,
                virtual_bytes: 204800 * 1024,
                open_fds: 17,
                max_fds: Some(20000),
                threads: 9,
                start_time_seconds: 1764750001.0,
            }
        );
    }

    #[test]
    fn renders_this_process() {
        let text = render("preau-test", "0.1.0");
        assert!(text.contains("preau_build_info{binary=\"preau-test\",version=\"0.1.0\",commit="), "{text}");
        for name in
            ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"]
        {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} in {text}");
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).expect("sample line");
            let v: f64 = line.split(' ').nth(1).and_then(|v| v.parse().ok()).expect("a number");
            assert!(v > 0.0 || name == "process_cpu_seconds_total", "{line}");
        }
    }
}
