use std::process::ExitCode;

use clap::{Parser, Subcommand};
use token_rotator::cli;

/// Keeps short-lived API tokens fresh inside Kubernetes Secrets.
#[derive(Debug, Parser)]
#[command(name = "token-rotator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ProviderCredential CRD as YAML.
    Crd,
    /// Run the controller.
    Run(cli::run::RunArgs),
    /// Perform one token exchange from manifests on disk and print a redacted summary.
    Fetch(cli::fetch::FetchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    token_rotator::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", cli::crd::render());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            token_rotator::telemetry::init_logging(args.log_format);
            match token_rotator::controller::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "the controller stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Fetch(args) => match cli::fetch::run(&args).await {
            Ok(summary) => {
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("summary serialises")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
