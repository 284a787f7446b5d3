use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Print the CRDs (ProviderCredential, TokenDeliveryGrant) as YAML.
    Crd {
        /// Only the CRD with this plural name (providercredentials, tokendeliverygrants).
        #[arg(long)]
        only: Option<String>,
    },
    /// Run the controller.
    Run(cli::run::RunArgs),
    /// Perform one token exchange from manifests on disk and print a redacted summary.
    Fetch(cli::fetch::FetchArgs),
    /// One line per ProviderCredential in the cluster: what needs attention first.
    Status(cli::status::StatusArgs),
    /// Ask the operator for new tokens now; with --wait, report what came of it.
    Refresh(cli::refresh::RefreshArgs),
    /// Consent once in a browser (authorizationCode grant) and hand the operator the
    /// resulting refresh token.
    Authorize(cli::authorize::AuthorizeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    token_rotator::install_crypto_provider();
    let cli = parse();
    match cli.command {
        Command::Crd { only } => match cli::crd::render_only(only.as_deref()) {
            Some(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "error: --only must be one of {}",
                    cli::crd::PLURALS.join(", ")
                );
                ExitCode::from(2)
            }
        },
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
        Command::Status(args) => match cli::status::run(&args).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Refresh(args) => match cli::refresh::run(&args).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Authorize(args) => match cli::authorize::run(&args).await {
            Ok(summary) => {
                eprintln!("Stored the refresh token in {}.", summary.stored_in);
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

/// The arguments; installed as `kubectl-token_rotator` (a kubectl plugin), the help says
/// `kubectl token-rotator`, as the user typed it.
fn parse() -> Cli {
    let as_plugin = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("kubectl-"))
        })
        .unwrap_or(false);
    let mut command = Cli::command();
    if as_plugin {
        command = command.bin_name("kubectl token-rotator");
    }
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}
