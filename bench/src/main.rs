//! `bench`: measures the bridge against the physical limit in the same run, on the embedded
//! stack (a throwaway Postgres; moto where an emulator is measured), and prints a markdown
//! table (also written as JSON). One subcommand per scenario; `bench all` runs them in turn.

mod backfill;
mod backlog;
mod ceiling;
mod consumer;
mod cost;
mod drain;
mod latency;
mod memory;
mod pipeline;
mod procstat;
mod relay;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Benchmarks of outbox-bridge, side by side with the physical limit"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// `bridge backfill` of a table while its rows change, next to capture's streaming rate.
    Backfill(backfill::BackfillArgs),
    /// shipping drains a queue backlog (100,000 events) with bounded memory.
    Backlog(backlog::BacklogArgs),
    /// Drain one backlog with pg_recvlogical and with bridge capture into three sinks.
    Ceiling(ceiling::CeilingArgs),
    /// shipping's throughput against SQS and DynamoDB answering in 10 ms (local endpoint).
    Consumer(consumer::ConsumerArgs),
    /// USD per million events on AWS, priced from what latency, latency --fan-out and backlog counted.
    Cost(cost::CostArgs),
    /// Commit → Kinesis ack and write → EventBridge latency at a steady rate.
    Latency(latency::LatencyArgs),
    /// Capture's peak RSS for one huge transaction and for a large backlog.
    Memory(memory::MemoryArgs),
    /// Monolith write → shipping's projection, with the stage breakdown (SQS and DynamoDB at 10 ms).
    Pipeline(pipeline::PipelineArgs),
    /// Relay throughput with 1, 2 and 4 shards.
    Relay(relay::RelayArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Backfill(args) => backfill::run(args).await,
        Scenario::Backlog(args) => backlog::run(args).await,
        Scenario::Ceiling(args) => ceiling::run(args).await,
        Scenario::Consumer(args) => consumer::run(args).await,
        Scenario::Cost(args) => cost::run(args),
        Scenario::Latency(args) => latency::run(args).await,
        Scenario::Memory(args) => memory::run(args).await,
        Scenario::Pipeline(args) => pipeline::run(args).await,
        Scenario::Relay(args) => relay::run(args).await,
    }
}
