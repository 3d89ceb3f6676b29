//! Metric descriptions: each server lists its metrics once, with their kind and HELP
//! text (`promtool check metrics` wants one for each), and describes them at start.

/// What a metric is, for its description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up.
    Counter,
    /// A distribution in buckets.
    Histogram,
}

/// Describes every metric of `table` to the installed recorder.
pub fn describe(table: &[(&'static str, Kind, &'static str)]) {
    for (name, kind, help) in table {
        match kind {
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}
