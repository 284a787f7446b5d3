//! Runs a local control plane until SIGINT/SIGTERM, for the demo and manual poking.
//!
//! The admin kubeconfig is written to `--kubeconfig` (atomically, once the control plane is
//! ready, so scripts can wait for the file) and removed again on shutdown.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    about = "Run a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)"
)]
struct Args {
    /// Where to write the admin kubeconfig.
    #[arg(long, value_name = "PATH")]
    kubeconfig: PathBuf,
    /// Directory of CRD YAML files to apply once the control plane is ready.
    #[arg(long, value_name = "DIR")]
    crds: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devcluster: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Subscribe before starting, so a signal during startup is not lost.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    eprintln!("devcluster: starting etcd, kube-apiserver and kube-controller-manager ...");
    let cp = tokio::select! {
        cp = testkit::ControlPlane::start() => cp?,
        _ = interrupt.recv() => return Ok(()),
        _ = terminate.recv() => return Ok(()),
    };
    if let Some(dir) = &args.crds {
        let names = cp.apply_crds(dir).await?;
        eprintln!(
            "devcluster: applied {} CRD(s) from {}",
            names.len(),
            dir.display()
        );
    }

    cp.export_kubeconfig(&args.kubeconfig)?;

    let version = cp.client().apiserver_version().await?;
    println!(
        "control plane {} ready at {}",
        version.git_version,
        cp.server_url()
    );
    println!("  export KUBECONFIG={}", args.kubeconfig.display());
    println!("  {}/kubectl get namespaces", cp.bin_dir().display());
    println!("  logs: {}", cp.dir().display());
    println!("Press Ctrl-C (or send SIGTERM) to stop.");

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("devcluster: stopping ...");
    tokio::task::spawn_blocking(move || drop(cp)).await?;
    let _ = std::fs::remove_file(&args.kubeconfig);
    eprintln!("devcluster: stopped");
    Ok(())
}
