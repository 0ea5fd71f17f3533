//! The `legacy-sim` binary: parse the command line and hand over to the library.

use anyhow::Context;
use clap::Parser;
use legacy_sim::cli::{Cli, Command};
use legacy_sim::{api, database, load, logging, migrate};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let _telemetry = telemetry::init("legacy-sim", cli.otlp_endpoint.as_deref())?;
    if let Command::Healthcheck { listen } = &cli.command {
        telemetry::probe::probe(listen, "/healthz", std::time::Duration::from_secs(5)).await?;
        println!("ok");
        return Ok(());
    }
    let database_url = cli.database_url().to_owned();
    match cli.command {
        Command::Migrate => {
            let applied = migrate::run(&database_url).await.context("migrate failed")?;
            if applied.is_empty() {
                println!("schema is up to date, no migration applied");
            }
            for name in applied {
                println!("applied {name}");
            }
        }
        Command::Serve(args) => {
            let pool = database::connect(&database_url, args.max_connections)
                .await
                .context("cannot connect to the database")?;
            api::serve(pool, args.listen).await.context("serve failed")?;
        }
        Command::Load(args) => {
            let options = args.options();
            let pool = database::connect(&database_url, options.pool_size())
                .await
                .context("cannot connect to the database")?;
            let summary = load::run(&pool, &options).await.context("load failed")?;
            if args.summary_json {
                println!("{}", summary.to_json_line().context("cannot encode the summary")?);
            } else {
                print!("{summary}");
            }
        }
        Command::Healthcheck { .. } => {}
    }
    Ok(())
}
