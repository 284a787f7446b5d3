//! Where a token request may connect. Link-local addresses (169.254.0.0/16, fe80::/10) are
//! refused unless the operator is started with `--allow-link-local-token-endpoints`: cloud
//! metadata services live there, and a ProviderCredential must not be a way to reach them.
//! Checked on the URL and on every address a name resolves to, before any connection.

use std::net::{IpAddr, SocketAddr};

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// 169.254.0.0/16, fe80::/10, and IPv4 link-local written as IPv6 (`::ffff:169.254.x.y`).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

/// A name that resolved only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error(
    "token endpoint host {host} resolves only to link-local addresses (cloud metadata services live there); the operator refuses them unless started with --allow-link-local-token-endpoints"
)]
pub struct LinkLocalRefused {
    pub host: String,
}

/// The resolved addresses a request may use: link-local ones are dropped, and a name with
/// nothing else left is refused.
pub fn permitted(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, LinkLocalRefused> {
    let resolved_any = !addrs.is_empty();
    let kept: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !is_link_local(a.ip()))
        .collect();
    if kept.is_empty() && resolved_any {
        return Err(LinkLocalRefused {
            host: host.to_string(),
        });
    }
    Ok(kept)
}

type Lookup = fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;

/// The HTTP client's resolver: the system's, with [`permitted`] applied to its answer.
pub struct GuardedResolver {
    lookup: Lookup,
}

impl GuardedResolver {
    pub fn system() -> Self {
        GuardedResolver {
            lookup: |host| {
                Box::pin(
                    async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) },
                )
            },
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let kept = permitted(&host, lookup.await?)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        IpAddr::from_str(s).unwrap()
    }

    #[test]
    fn link_local_addresses_in_every_spelling() {
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf:ffff::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_link_local(ip(refused)), "{refused}");
        }
        for allowed in [
            "127.0.0.1",
            "10.0.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "::1",
            "fec0::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_link_local(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn a_name_keeps_only_its_other_addresses() {
        let a = |s: &str| SocketAddr::new(ip(s), 0);
        assert_eq!(
            permitted("x", vec![a("169.254.169.254"), a("127.0.0.1")]).unwrap(),
            vec![a("127.0.0.1")]
        );
        let refused = permitted(
            "metadata.internal",
            vec![a("169.254.169.254"), a("fe80::1")],
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("metadata.internal"), "{refused}");
        assert!(refused.contains("--allow-link-local-token-endpoints"));
        assert!(permitted("x", vec![]).unwrap().is_empty());
    }

    /// The hook itself, on names that resolve without sending a packet (an address literal
    /// and the hosts file's localhost).
    #[tokio::test]
    async fn the_resolver_hook_applies_the_check() {
        let resolve = |host: &str| GuardedResolver::system().resolve(Name::from_str(host).unwrap());
        let refused = resolve("169.254.169.254").await.err().expect("refused");
        assert!(refused.to_string().contains("link-local"), "{refused}");
        let local: Vec<SocketAddr> = resolve("localhost").await.unwrap().collect();
        assert!(!local.is_empty() && local.iter().all(|a| a.ip().is_loopback()));
    }
}
