//! Starting, addressing and stopping the emulator.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::control::Control;
use crate::provider::Provider;
use crate::state::Shared;
use crate::{EmulatorError, routes, server, tls};

/// How to start the emulator.
#[derive(Clone, Debug)]
pub struct Options {
    /// Serve HTTPS with a certificate from a fresh throwaway CA (see [`Emulator::ca_pem`]).
    pub tls: bool,
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: false,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops the server and closes
/// every open connection.
pub struct Emulator {
    addr: SocketAddr,
    ca_pem: Option<String>,
    control: Control,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Binds and starts serving in the background of the current Tokio runtime.
    pub async fn start(opts: Options) -> Result<Emulator, EmulatorError> {
        // Harmless when another provider is already installed; the server config below
        // names ring explicitly anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener =
            TcpListener::bind(opts.addr)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: opts.addr,
                    source,
                })?;
        let addr = listener.local_addr()?;
        let (ca_pem, acceptor) = if opts.tls {
            let material = tls::generate()?;
            (
                Some(material.ca_pem),
                Some(TlsAcceptor::from(material.config)),
            )
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared::new(opts.tls));
        let control = Control::new(shared.clone());
        let task = tokio::spawn(server::serve(listener, routes::router(shared), acceptor));
        Ok(Emulator {
            addr,
            ca_pem,
            control,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or with TLS `https://localhost:PORT`.
    pub fn base_url(&self) -> String {
        let port = self.addr.port();
        if self.ca_pem.is_some() {
            return format!("https://localhost:{port}");
        }
        match self.addr.ip() {
            ip if ip.is_unspecified() => format!("http://127.0.0.1:{port}"),
            std::net::IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
            ip => format!("http://{ip}:{port}"),
        }
    }

    pub fn token_url(&self, p: Provider) -> String {
        format!("{}{}", self.base_url(), p.token_path())
    }

    /// The authorization endpoint, for a provider that has one.
    pub fn authorize_url(&self, p: Provider) -> Option<String> {
        p.authorize_path()
            .map(|path| format!("{}{path}", self.base_url()))
    }

    pub fn whoami_url(&self, p: Provider) -> String {
        format!("{}{}", self.base_url(), p.whoami_path())
    }

    /// `POST` here for the standards OAuth 2.0 server (`<base_url>/oauth2/token`).
    pub fn oauth2_token_url(&self) -> String {
        format!("{}{}", self.base_url(), crate::oauth2::TOKEN_PATH)
    }

    /// The `/oauth2` server's protected resource (`<base_url>/oauth2/whoami`).
    pub fn oauth2_whoami_url(&self) -> String {
        format!("{}{}", self.base_url(), crate::oauth2::WHOAMI_PATH)
    }

    /// The `/oauth2` server's issuer identifier (`<base_url>/oauth2`), which client assertions
    /// may name as `aud` instead of the token endpoint URL.
    pub fn oauth2_issuer(&self) -> String {
        format!("{}{}", self.base_url(), crate::oauth2::ISSUER_PATH)
    }

    /// Base URL of the JSON admin API.
    pub fn admin_url(&self) -> String {
        format!("{}/_emulator", self.base_url())
    }

    /// The throwaway CA certificate (PEM) to trust, when started with TLS.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Stops the server and waits until it is gone.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
