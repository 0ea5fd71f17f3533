//! The run's table.

use harness::process::Proc;

use crate::fault::Fault;

/// The process's peak resident memory (VmHWM), in MiB; 0 where /proc cannot tell.
pub(crate) fn peak_rss_mib(proc: &Proc) -> f64 {
    proc.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub(crate) fn print_table(r: &serde_json::Value, recoveries: &[(Fault, f64)]) {
    println!("\n### chaos run, seed {}\n", r["seed"]);
    println!("| measure | value |\n|---|---:|");
    for key in [
        "events_written",
        "in_kinesis",
        "kinesis_duplicates",
        "on_eventbridge",
        "eventbridge_duplicates",
        "lost_before_kinesis",
        "lost_before_eventbridge",
        "phantoms",
        "phantom_mismatches",
        "projection_mismatches",
        "shipment_mismatches",
        "healthy_dead_lettered",
        "unstorable_events",
        "unstorable_parked",
        "aggregates_out_of_order_in_kinesis",
    ] {
        println!("| {} | {} |", key.replace('_', " "), r[key]);
    }
    if let Some(dlq) = r["dlq"].as_object() {
        for (queue, depth) in dlq {
            println!("| DLQ {queue} | {depth} |");
        }
    }
    println!(
        "| shipping queue backlog, deepest | {} |",
        r["shipping_peak_backlog"]
    );
    if let Some(rss) = r["peak_rss_mib"].as_object() {
        for (process, mib) in rss {
            println!(
                "| peak RSS of the last {process} process (MiB) | {:.1} |",
                mib.as_f64().unwrap_or(0.0)
            );
        }
    }
    println!("\n| fault | injected | capture past it, worst (s) |\n|---|---:|---:|");
    if let Some(faults) = r["faults"].as_object() {
        for (kind, n) in faults {
            let worst = recoveries
                .iter()
                .filter(|(f, _)| format!("{f:?}") == *kind)
                .map(|(_, s)| *s)
                .fold(0.0, f64::max);
            println!("| {kind} | {n} | {worst:.1} |");
        }
    }
    println!("\n{:.0} s in all", r["seconds"].as_f64().unwrap_or(0.0));
}
