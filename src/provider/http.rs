//! The only I/O of the provider layer: one POST with strict transport rules.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use secrecy::ExposeSecret;
use sha2::Digest;

use super::address;
use super::config::{ClientAuthentication, Limits, Param, ProviderConfig};
use super::credentials::Credentials;
use super::error::FetchError;
use super::request::{GrantRequest, PreparedRequest, build_request};
use super::response::{IssuedToken, RawResponse, interpret};
use super::scrub::Scrubber;

/// Operator-wide transport policy.
#[derive(Clone, Debug, Default)]
pub struct HttpPolicy {
    /// Permit `http://` endpoints (local testing only).
    pub allow_http: bool,
    /// When set, only these hosts may be token endpoints.
    pub allowed_hosts: Option<Vec<String>>,
    /// Permit link-local token endpoints (169.254.0.0/16, fe80::/10: cloud metadata).
    pub allow_link_local: bool,
}

/// A CA bundle or a client certificate and key (PEM), by its SHA-256.
type Sha256 = [u8; 32];

/// What a connection pool is for: CA bundle, limits and client certificate.
type PoolKey = (Option<Sha256>, Limits, Option<Sha256>);

/// Connection pools kept, at most. Any tenant may name any number of CA bundles (and client
/// certificates rotate): past this, the least recently used pool goes. One in use by a
/// request in flight stays alive with it; the next request to its endpoint builds a new one.
pub const MAX_POOLS: usize = 64;

/// The pools, each with when it was last used (a counter).
#[derive(Default)]
struct Pools {
    pools: HashMap<PoolKey, (reqwest::Client, u64)>,
    uses: u64,
}

impl Pools {
    fn get(&mut self, key: &PoolKey) -> Option<reqwest::Client> {
        self.uses += 1;
        let (client, used) = self.pools.get_mut(key)?;
        *used = self.uses;
        Some(client.clone())
    }

    fn insert(&mut self, key: PoolKey, client: reqwest::Client) {
        while self.pools.len() >= MAX_POOLS {
            let Some(oldest) = self
                .pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.pools.remove(&oldest);
        }
        self.uses += 1;
        self.pools.insert(key, (client, self.uses));
    }
}

/// Sends token requests. Keeps one connection pool per distinct CA bundle, limits and client
/// certificate, at most [`MAX_POOLS`].
pub struct TokenClient {
    policy: HttpPolicy,
    clients: Mutex<Pools>,
}

impl TokenClient {
    pub fn new(policy: HttpPolicy) -> Self {
        TokenClient {
            policy,
            clients: Mutex::new(Pools::default()),
        }
    }

    /// How many HTTP clients (connection pools) are kept.
    pub fn pooled_clients(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pools
            .len()
    }

    /// Performs one exchange: build, send, interpret.
    pub async fn fetch(
        &self,
        config: &ProviderConfig,
        credentials: &Credentials,
        grant: &GrantRequest,
    ) -> Result<IssuedToken, FetchError> {
        self.check_endpoint(&config.token_url)?;
        let request = build_request(config, credentials, grant)?;
        let client = self.client_for(config, credentials)?;
        let scrub_values: Vec<&str> = request
            .sent_secrets
            .iter()
            .map(|s| s.expose_secret())
            .chain(credentials.all_values())
            .collect();
        let scrubber = Scrubber::new(scrub_values);
        let sent_refresh = match grant {
            GrantRequest::Refresh(t) => Some(t),
            GrantRequest::Primary => None,
        };
        let (status, headers, body) = send(
            &client,
            &request,
            &config.limits,
            &scrubber,
            &config.token_url,
        )
        .await?;
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
        };
        let raw = RawResponse {
            status,
            content_type: header(CONTENT_TYPE),
            retry_after: header(RETRY_AFTER),
            location: header(LOCATION),
            body: &body,
        };
        interpret(config, &raw, &scrubber, sent_refresh, Timestamp::now())
    }

    /// HTTPS unless explicitly allowed, and the optional host allowlist.
    pub fn check_endpoint(&self, url: &url::Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            "http" => {
                return Err(FetchError::Configuration(format!(
                    "spec.tokenEndpoint.url uses plain http (host {}); use https, or start the operator with --allow-http for local testing",
                    url.host_str().unwrap_or("?")
                )));
            }
            other => {
                return Err(FetchError::Configuration(format!(
                    "spec.tokenEndpoint.url has unsupported scheme `{other}`; use https"
                )));
            }
        }
        if !self.policy.allow_link_local {
            let literal = match url.host() {
                Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
                _ => None,
            };
            if literal.is_some_and(address::is_link_local) {
                return Err(FetchError::Configuration(format!(
                    "spec.tokenEndpoint.url points at a link-local address ({}), where cloud metadata services live; the operator refuses it unless started with --allow-link-local-token-endpoints",
                    url.host_str().unwrap_or("?")
                )));
            }
        }
        if let Some(allowed) = &self.policy.allowed_hosts {
            let host = url.host_str().unwrap_or_default();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
                return Err(FetchError::Configuration(format!(
                    "token endpoint host {host} is not in the operator's allowed hosts; ask the cluster admin to add it to --allowed-token-host"
                )));
            }
        }
        Ok(())
    }

    fn client_for(
        &self,
        config: &ProviderConfig,
        credentials: &Credentials,
    ) -> Result<reqwest::Client, FetchError> {
        let identity = client_identity(config, credentials)?;
        let key = (
            config
                .ca_bundle
                .as_ref()
                .map(|pem| sha2::Sha256::digest(pem.as_bytes()).into()),
            config.limits.clone(),
            identity.as_ref().map(|(_, digest)| *digest),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client);
        }
        let client = build_client(
            config.ca_bundle.as_deref(),
            &config.limits,
            &self.policy,
            identity.map(|(identity, _)| identity),
        )?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The client certificate for clientAuthentication tls (RFC 8705), from the credentials.
fn client_identity(
    config: &ProviderConfig,
    credentials: &Credentials,
) -> Result<Option<(reqwest::Identity, [u8; 32])>, FetchError> {
    if config.client_authentication != ClientAuthentication::Tls {
        return Ok(None);
    }
    let part = |param| {
        credentials
            .get(param)
            .ok_or_else(|| FetchError::MissingCredential {
                key: credentials.key_name(param).to_string(),
                grant: "tls client authentication",
            })
    };
    let certificate = part(Param::TlsCertificate)?.expose_secret();
    let key = part(Param::TlsKey)?.expose_secret();
    let pem = format!("{certificate}\n{key}\n");
    let digest: [u8; 32] = sha2::Sha256::digest(pem.as_bytes()).into();
    let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|_| {
        FetchError::Configuration(format!(
            "the credentials keys `{}` and `{}` are not a PEM client certificate and its private key",
            credentials.key_name(Param::TlsCertificate),
            credentials.key_name(Param::TlsKey)
        ))
    })?;
    Ok(Some((identity, digest)))
}

fn build_client(
    ca_bundle: Option<&str>,
    limits: &Limits,
    policy: &HttpPolicy,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.overall_timeout)
        .https_only(!policy.allow_http)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("token-rotator/", env!("CARGO_PKG_VERSION")));
    if !policy.allow_link_local {
        // Every name is checked on what it resolves to, before any connection.
        builder = builder.dns_resolver(std::sync::Arc::new(address::GuardedResolver::system()));
    }
    if let Some(pem) = ca_bundle {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|_| {
            FetchError::Configuration(
                "spec.tokenEndpoint.caBundle is not a valid PEM certificate bundle".into(),
            )
        })?;
        if certs.is_empty() {
            return Err(FetchError::Configuration(
                "spec.tokenEndpoint.caBundle holds no certificate".into(),
            ));
        }
        builder = builder.tls_certs_only(certs);
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| {
        FetchError::Configuration(format!("cannot build the HTTP client: {}", root_cause(&e)))
    })
}

async fn send(
    client: &reqwest::Client,
    request: &PreparedRequest,
    limits: &Limits,
    scrubber: &Scrubber<'_>,
    url: &url::Url,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), FetchError> {
    let mut builder = client
        .post(request.url.clone())
        .header(CONTENT_TYPE, request.content_type)
        .header(reqwest::header::ACCEPT, "application/json")
        .body(request.body.expose_secret().to_string());
    if let Some(auth) = &request.authorization {
        let mut value =
            reqwest::header::HeaderValue::from_str(auth.expose_secret()).map_err(|_| {
                FetchError::Configuration(
                    "client id or secret contains characters not allowed in a header".into(),
                )
            })?;
        value.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, value);
    }
    let transport = |e: reqwest::Error| transport_error(&e, limits, scrubber, url);
    let mut response = builder.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let too_big = |size: String| FetchError::InvalidResponse {
        status,
        problem: format!(
            "the answer is {size}, over the {} byte limit for a token response",
            limits.max_body_bytes
        ),
        words: String::new(),
    };
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limits.max_body_bytes as u64
    {
        return Err(too_big(format!("{len} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limits.max_body_bytes {
            return Err(too_big("larger".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, headers, body))
}

fn transport_error(
    e: &reqwest::Error,
    limits: &Limits,
    scrubber: &Scrubber<'_>,
    url: &url::Url,
) -> FetchError {
    let host = url.host_str().unwrap_or("?");
    if let Some(refused) = find_source::<address::LinkLocalRefused>(e) {
        return FetchError::Configuration(refused.to_string());
    }
    let cause = if e.is_timeout() {
        format!(
            "no answer from {host} within {}s",
            limits.overall_timeout.as_secs()
        )
    } else if e.is_connect() {
        format!(
            "cannot connect to {host}: {}",
            scrubber.excerpt(&root_cause(e))
        )
    } else {
        format!(
            "exchange with {host} failed: {}",
            scrubber.excerpt(&root_cause(e))
        )
    };
    FetchError::ProviderUnavailable {
        cause,
        status: None,
        retry_after: None,
        words: String::new(),
    }
}

/// An error of type `T` anywhere in the chain.
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// The innermost error message: it names the real problem (refused, reset, bad certificate)
/// and, unlike reqwest's own Display, carries no URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wraps an error as the HTTP client's connector does (the resolver's error as source).
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Connect(#[source] Box<dyn std::error::Error + Send + Sync>);

    /// The pool a victim keeps using stays; the ones named once and never again go first.
    #[test]
    fn the_least_recently_used_pool_goes_first() {
        crate::install_crypto_provider();
        let limits = Limits::default();
        let key = |i: u16| -> PoolKey {
            let mut digest = [0; 32];
            digest[..2].copy_from_slice(&i.to_be_bytes());
            (Some(digest), limits.clone(), None)
        };
        let client = reqwest::Client::new();
        let mut pools = Pools::default();
        pools.insert(key(0), client.clone());
        for i in 1..1000 {
            pools.insert(key(i), client.clone());
            assert!(pools.pools.len() <= MAX_POOLS);
            if i % 10 == 0 {
                assert!(pools.get(&key(0)).is_some(), "the victim's pool after {i}");
            }
        }
        assert_eq!(pools.pools.len(), MAX_POOLS);
        assert!(pools.get(&key(0)).is_some());
        assert!(pools.get(&key(1)).is_none(), "named once, long ago");
        assert!(pools.get(&key(999)).is_some(), "the newest");
    }

    #[test]
    fn a_refused_resolution_is_found_deep_in_the_error_chain() {
        let refused = address::LinkLocalRefused {
            host: "metadata.internal".into(),
        };
        let wrapped = Connect(Box::new(Connect(Box::new(refused))));
        let found = find_source::<address::LinkLocalRefused>(&wrapped).expect("found");
        assert_eq!(found.host, "metadata.internal");
        let unrelated = Connect("connection refused".into());
        assert!(find_source::<address::LinkLocalRefused>(&unrelated).is_none());
    }
}
