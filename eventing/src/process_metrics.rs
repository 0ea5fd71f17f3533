//! What every process exposes besides its own metrics, under the names Prometheus' client
//! libraries use (dashboards and alerts expect them): `<binary>_build_info{version, commit}`
//! and `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_start_time_seconds`, read
//! from `/proc` at each scrape (Linux; elsewhere they are left out).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The commit the binary was built from (`OUTBOX_BRIDGE_COMMIT` at build time), else `unknown`.
pub const COMMIT: &str = match option_env!("OUTBOX_BRIDGE_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// A registry of `<binary>_build_info` and the `process_*` figures (no prefix of its own: those
/// names are the convention), to render after a process's own (see [`render`]).
pub fn registry(binary: &str, version: &str) -> Registry {
    let mut registry = Registry::default();
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    info.get_or_create(&vec![
        ("version".to_owned(), version.to_owned()),
        ("commit".to_owned(), COMMIT.to_owned()),
    ])
    .set(1);
    registry.register(
        format!("{binary}_build_info"),
        "The version and commit of this binary (always 1)",
        info,
    );
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// The OpenMetrics text of `registries`, in order, ended once (`# EOF`).
pub fn render(registries: &[&Registry]) -> String {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    // Writing into a String cannot fail.
    for registry in registries {
        let _ = encode_registry(&mut out, registry);
    }
    let _ = encode_eof(&mut out);
    out
}

#[derive(Debug)]
struct ProcessCollector;

/// The figures of `/proc/self`, if readable.
struct Sample {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    open_fds: i64,
}

fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = 100.0; // USER_HZ: 100 on every Linux ABI that matters.
    let page = 4096_i64;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    Some(Sample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        resident_bytes: i64::try_from(field(24)?).unwrap_or(0) * page,
        virtual_bytes: i64::try_from(field(23)?).unwrap_or(0),
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        open_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = sample() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                s.virtual_bytes,
            ),
            ("process_open_fds", "Open file descriptors", s.open_fds),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let start = ConstGauge::new(s.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            None,
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_figures_are_exposed() {
        // Some CPU time to report (the clock ticks at 10 ms).
        let started = std::time::Instant::now();
        let mut spin = 0_u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        assert!(spin > 0);
        let own = Registry::with_prefix("demo");
        let process = registry("demo", "1.2.3");
        let out = render(&[&own, &process]);
        assert!(out.contains("demo_build_info{version=\"1.2.3\",commit="), "{out}");
        assert_eq!(out.matches("# EOF").count(), 1, "{out}");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            let line = out.lines().find(|l| l.starts_with(name));
            let value: f64 = line
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0);
            assert!(value > 0.0, "{name}: {line:?}\n{out}");
        }
    }
}
