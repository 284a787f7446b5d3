//! Kubeconfig files for the control plane's users, and `kube::Config`s read from them, so the
//! file a subprocess gets and the client a test uses can never disagree.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::CertAndKey;
use crate::error::Result;

/// How a kubeconfig user authenticates.
pub(crate) enum Credentials<'a> {
    ClientCert(&'a CertAndKey),
    Token(&'a str),
}

/// Renders a single-context kubeconfig.
pub(crate) fn render(
    server: &str,
    ca_pem: &str,
    user: &str,
    namespace: &str,
    credentials: &Credentials<'_>,
) -> String {
    let b64 = |s: &str| STANDARD.encode(s);
    let user_fields = match credentials {
        Credentials::ClientCert(pair) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&pair.cert_pem),
            b64(&pair.key_pem)
        ),
        Credentials::Token(token) => format!("    token: {token}\n"),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: token-rotator-test\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  \
           user:\n\
         {user_fields}\
         contexts:\n\
         - name: {user}\n  \
           context:\n    \
             cluster: token-rotator-test\n    \
             user: {user}\n    \
             namespace: {namespace}\n\
         current-context: {user}\n",
        ca = b64(ca_pem),
    )
}

/// The client configuration a rendered kubeconfig describes.
pub(crate) async fn to_config(kubeconfig: &str) -> Result<kube::Config> {
    let parsed = Kubeconfig::from_yaml(kubeconfig)?;
    Ok(kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_kubeconfig_round_trips() {
        let text = render(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "serviceaccount-ns-sa",
            "ns",
            &Credentials::Token("abc.def"),
        );
        let parsed = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(
            parsed.current_context.as_deref(),
            Some("serviceaccount-ns-sa")
        );
        let config = to_config(&text).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "ns");
    }
}
