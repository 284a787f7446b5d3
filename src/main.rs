use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use token_rotator::cli;

#[cfg(all(
    target_os = "linux",
    not(target_env = "msvc"),
    not(feature = "system-allocator")
))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Print a shell completion script (for `kubectl token-rotator`, see the README).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    token_rotator::install_crypto_provider();
    let cli = parse();
    match cli.command {
        Command::Completions { shell } => {
            cli::completion::write_script(
                shell,
                &mut Cli::command(),
                "token-rotator",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
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
            // Lease flags that cover no token request are refused before anything connects.
            if args.leader.leader_election
                && let Err(e) = token_rotator::leader::lease_timeout_cap(&args.leader)
            {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match token_rotator::controller::run(args.config()).await {
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
            // Errors may quote a provider or a server: printed without control characters.
            Err(e) => {
                eprintln!("error: {}", cli::terminal_safe(&e.to_string()));
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
                eprintln!("error: {}", cli::terminal_safe(&e.to_string()));
                ExitCode::FAILURE
            }
        },
    }
}

/// The arguments; installed as `kubectl-token_rotator` (a kubectl plugin), the help says
/// `kubectl token-rotator`, as the user typed it. Installed as `kubectl_complete-token_rotator`,
/// it answers kubectl's completion of the plugin's arguments and exits.
fn parse() -> Cli {
    let program = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut command = Cli::command();
    if program.starts_with("kubectl_complete-") {
        command.build();
        let words: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        cli::completion::write_plugin_candidates(&command, &words, &mut std::io::stdout());
        std::process::exit(0);
    }
    if program.starts_with("kubectl-") {
        command = command.bin_name("kubectl token-rotator");
    }
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// jemalloc's options, read once at its start: a background thread returns freed pages to
/// the system a second after they are freed (idle too, where glibc kept the start-up peak
/// resident), and one arena, not four per core, keeps fewer partly used pages.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: AllocatorOptions = AllocatorOptions(
    c"background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr(),
);

/// A C string jemalloc reads before anything else runs.
#[repr(transparent)]
pub struct AllocatorOptions(*const std::ffi::c_char);

// SAFETY: it points at a constant string and is never written.
unsafe impl Sync for AllocatorOptions {}
