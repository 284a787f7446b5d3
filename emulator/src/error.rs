use std::io;

/// Everything that can go wrong while starting or configuring the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate the throwaway TLS certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot build the TLS server configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("unknown provider {0:?} (expected rently, carrental, retently or reltio)")]
    UnknownProvider(String),
    #[error("invalid OAuth 2.0 registration: {0}")]
    Registration(String),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}
