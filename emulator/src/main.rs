//! `provider-emulator`: the emulator as a process, for the demo and subprocess tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use provider_emulator::{Emulator, Options, Provider};

#[derive(Parser)]
#[command(
    version,
    about = "Emulates the Rently, Carrental, Retently and Reltio token endpoints, plus a standards OAuth 2.0 server under /oauth2"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve HTTPS with a certificate from a throwaway CA.
    #[arg(long)]
    tls: bool,
    /// Write the throwaway CA (PEM) to this file.
    #[arg(long, requires = "tls")]
    ca_out: Option<PathBuf>,
    /// Token lifetime of a provider, e.g. `reltio=30`; repeatable.
    #[arg(long = "lifetime", value_name = "PROVIDER=SECS", value_parser = parse_lifetime)]
    lifetimes: Vec<(Provider, u64)>,
}

fn parse_lifetime(s: &str) -> Result<(Provider, u64), String> {
    let (p, secs) = s
        .split_once('=')
        .ok_or_else(|| format!("expected PROVIDER=SECS, got {s:?}"))?;
    let p = p.parse::<Provider>().map_err(|e| e.to_string())?;
    let secs = secs
        .parse()
        .map_err(|e| format!("bad seconds {secs:?}: {e}"))?;
    Ok((p, secs))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let emulator = Emulator::start(Options {
        tls: args.tls,
        addr: args.listen,
    })
    .await?;
    if let (Some(path), Some(pem)) = (&args.ca_out, emulator.ca_pem()) {
        std::fs::write(path, pem)?;
    }
    let control = emulator.control();
    for (p, secs) in &args.lifetimes {
        control.set_lifetime(*p, *secs);
    }
    println!("listening on {}", emulator.local_addr());
    for p in Provider::ALL {
        println!("{:<10} {}", p.as_str(), emulator.token_url(p));
    }
    println!("{:<10} {}", "oauth2", emulator.oauth2_token_url());
    println!("{:<10} {}", "admin", emulator.admin_url());
    wait_for_signal().await?;
    emulator.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
