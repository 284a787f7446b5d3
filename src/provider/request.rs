//! Pure construction of one token request from a dialect and credentials.

use std::fmt;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use jiff::Timestamp;

use super::assertion;
use super::config::{
    BodyEncoding, ClientAuthentication, GrantType, JWT_TOKEN_TYPE, Param, ProviderConfig,
};
use super::credentials::Credentials;
use super::error::FetchError;

/// Which grant this request spends.
#[derive(Clone)]
pub enum GrantRequest {
    /// The configured primary grant (client credentials, password or authorization code).
    Primary,
    /// `grant_type=refresh_token` with this token.
    Refresh(SecretString),
}

impl GrantRequest {
    pub fn label(&self, config: &ProviderConfig) -> &'static str {
        match self {
            GrantRequest::Primary => config.grant.wire_value(),
            GrantRequest::Refresh(_) => "refresh_token",
        }
    }
}

impl fmt::Debug for GrantRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantRequest::Primary => f.write_str("Primary"),
            GrantRequest::Refresh(_) => f.write_str("Refresh([REDACTED])"),
        }
    }
}

/// A request ready to send. Its `Debug` never shows the body or the Authorization header.
pub struct PreparedRequest {
    pub url: url::Url,
    pub content_type: &'static str,
    pub authorization: Option<SecretString>,
    pub body: SecretString,
    /// Every secret value placed on the wire, for scrubbing the answer.
    pub sent_secrets: Vec<SecretString>,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("url", &self.url.as_str())
            .field("content_type", &self.content_type)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[REDACTED]"),
            )
            .field("body", &"[REDACTED]")
            .finish()
    }
}

/// Builds the request, or says which credential or setting is missing.
pub fn build_request(
    config: &ProviderConfig,
    credentials: &Credentials,
    grant: &GrantRequest,
) -> Result<PreparedRequest, FetchError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut sent_secrets: Vec<SecretString> = Vec::new();
    let grant_label = grant.label(config);

    let push = |param: Param, value: &str, fields: &mut Vec<(String, String)>| {
        if let Some(name) = config.wire_name(param) {
            fields.push((name.to_string(), value.to_string()));
        }
    };
    let required = |param: Param| -> Result<&SecretString, FetchError> {
        credentials
            .get(param)
            .ok_or_else(|| FetchError::MissingCredential {
                key: credentials.key_name(param).to_string(),
                grant: grant_label,
            })
    };

    if config.send_grant_type {
        push(Param::GrantType, grant_label, &mut fields);
    }

    match grant {
        GrantRequest::Primary => match config.grant {
            GrantType::ClientCredentials => {}
            GrantType::Password => {
                let username = required(Param::Username)?;
                let password = required(Param::Password)?;
                push(Param::Username, username.expose_secret(), &mut fields);
                push(Param::Password, password.expose_secret(), &mut fields);
                sent_secrets.extend([username.clone(), password.clone()]);
            }
            GrantType::AuthorizationCode => {
                let code = required(Param::Code)?;
                if config.redirect_uri.is_none() {
                    return Err(FetchError::Configuration(
                        "the authorizationCode grant needs spec.grant.redirectUri (the redirect_uri the code was issued for)"
                            .into(),
                    ));
                }
                push(Param::Code, code.expose_secret(), &mut fields);
                sent_secrets.push(code.clone());
                if let Some(verifier) = credentials.get(Param::CodeVerifier) {
                    push(Param::CodeVerifier, verifier.expose_secret(), &mut fields);
                    sent_secrets.push(verifier.clone());
                }
            }
            GrantType::JwtBearer if credentials.get(Param::ServiceAccountToken).is_some() => {
                // RFC 7523 §2.1 with an assertion another issuer (the cluster) signed.
                let token = service_account_token(credentials)?;
                fields.push(("assertion".into(), token.expose_secret().to_string()));
                sent_secrets.push(token.clone());
            }
            GrantType::TokenExchange => {
                // RFC 8693 §2.1; extraParameters may replace subject_token_type and add
                // audience, resource and requested_token_type.
                let token = service_account_token(credentials)?;
                fields.push(("subject_token".into(), token.expose_secret().to_string()));
                fields.push(("subject_token_type".into(), JWT_TOKEN_TYPE.into()));
                sent_secrets.push(token.clone());
            }
            GrantType::JwtBearer => {
                let issuer = match &config.assertion.issuer {
                    Some(issuer) => issuer.clone(),
                    None => credentials
                        .get(Param::ClientId)
                        .ok_or_else(|| missing(credentials, Param::ClientId, grant_label))?
                        .expose_secret()
                        .to_string(),
                };
                let assertion = assertion::sign(
                    &config.assertion,
                    &private_key(credentials, grant_label)?,
                    &assertion::Subject {
                        issuer: &issuer,
                        subject: config.assertion.subject.as_deref().or(config
                            .assertion
                            .subject_is_issuer
                            .then_some(issuer.as_str())),
                        audience: &audience(config),
                        scope: config.scope.as_deref(),
                        extra: &config.assertion.claims,
                    },
                    Timestamp::now(),
                )?;
                fields.push(("assertion".into(), assertion.expose_secret().to_string()));
                sent_secrets.push(assertion);
            }
        },
        GrantRequest::Refresh(token) => {
            push(Param::RefreshToken, token.expose_secret(), &mut fields);
            sent_secrets.push(token.clone());
        }
    }
    if let Some(redirect_uri) = &config.redirect_uri {
        // Retently expects redirect_uri on refresh too; other servers ignore it.
        if config.grant == GrantType::AuthorizationCode {
            push(Param::RedirectUri, redirect_uri, &mut fields);
        }
    }
    if let Some(scope) = &config.scope {
        push(Param::Scope, scope, &mut fields);
    }

    let mut authorization = None;
    match config.client_authentication {
        ClientAuthentication::Basic => {
            let id = required(Param::ClientId)?;
            let secret = credentials.get(Param::ClientSecret);
            let secret_text = secret.map(|s| s.expose_secret()).unwrap_or("");
            // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
            let pair = format!(
                "{}:{}",
                form_encode(id.expose_secret()),
                form_encode(secret_text)
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            authorization = Some(SecretString::from(format!("Basic {encoded}")));
            sent_secrets.push(id.clone());
            sent_secrets.extend(secret.cloned());
            sent_secrets.push(SecretString::from(encoded));
        }
        ClientAuthentication::Body => {
            let id = required(Param::ClientId)?;
            let secret = required(Param::ClientSecret)?;
            push(Param::ClientId, id.expose_secret(), &mut fields);
            push(Param::ClientSecret, secret.expose_secret(), &mut fields);
            sent_secrets.extend([id.clone(), secret.clone()]);
        }
        ClientAuthentication::None => {
            // Public clients still identify themselves when a client id is given.
            if let Some(id) = credentials.get(Param::ClientId) {
                push(Param::ClientId, id.expose_secret(), &mut fields);
                sent_secrets.push(id.clone());
            }
        }
        ClientAuthentication::PrivateKeyJwt | ClientAuthentication::ClientSecretJwt => {
            let id = required(Param::ClientId)?;
            let key = match config.client_authentication {
                ClientAuthentication::ClientSecretJwt => {
                    let secret = required(Param::ClientSecret)?;
                    sent_secrets.push(secret.clone());
                    assertion::SigningKey::ClientSecret(secret.expose_secret())
                }
                _ => private_key(credentials, grant_label)?,
            };
            // iss = sub = the client id (RFC 7523 §3); aud = the token endpoint by default.
            let client_assertion = assertion::sign(
                &config.assertion,
                &key,
                &assertion::Subject {
                    issuer: id.expose_secret(),
                    subject: Some(id.expose_secret()),
                    audience: &audience(config),
                    scope: None,
                    extra: &Default::default(),
                },
                Timestamp::now(),
            )?;
            push(Param::ClientId, id.expose_secret(), &mut fields);
            fields.push((
                "client_assertion_type".into(),
                assertion::CLIENT_ASSERTION_TYPE.into(),
            ));
            fields.push((
                "client_assertion".into(),
                client_assertion.expose_secret().to_string(),
            ));
            sent_secrets.extend([id.clone(), client_assertion]);
        }
        ClientAuthentication::ServiceAccountToken => {
            let token = service_account_token(credentials)?;
            // Keycloak refuses a client_id that differs from the token's sub: sent only when
            // one is given (Entra ID needs it).
            if let Some(id) = credentials.get(Param::ClientId) {
                push(Param::ClientId, id.expose_secret(), &mut fields);
                sent_secrets.push(id.clone());
            }
            fields.push((
                "client_assertion_type".into(),
                assertion::CLIENT_ASSERTION_TYPE.into(),
            ));
            fields.push(("client_assertion".into(), token.expose_secret().to_string()));
            sent_secrets.push(token.clone());
        }
        ClientAuthentication::Tls => {
            // RFC 8705 §2: the certificate authenticates (see http.rs); client_id is required.
            let id = required(Param::ClientId)?;
            push(Param::ClientId, id.expose_secret(), &mut fields);
            sent_secrets.push(id.clone());
        }
    }

    for (name, value) in &config.extra_parameters {
        fields.retain(|(existing, _)| existing != name);
        fields.push((name.clone(), value.clone()));
    }

    let (content_type, body) = match config.encoding {
        BodyEncoding::Form => {
            let mut serializer = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in &fields {
                serializer.append_pair(name, value);
            }
            ("application/x-www-form-urlencoded", serializer.finish())
        }
        BodyEncoding::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            (
                "application/json",
                serde_json::Value::Object(object).to_string(),
            )
        }
    };

    Ok(PreparedRequest {
        url: config.token_url.clone(),
        content_type,
        authorization,
        body: SecretString::from(body),
        sent_secrets,
    })
}

/// The ServiceAccount token minted for this request (by the controller, right before it).
fn service_account_token(credentials: &Credentials) -> Result<&SecretString, FetchError> {
    credentials.get(Param::ServiceAccountToken).ok_or_else(|| {
        FetchError::Configuration(
            "no ServiceAccount token was minted for this request: spec.credentials.serviceAccount is used by the operator, which requests one from the Kubernetes API for each token request (token-rotator fetch cannot)"
                .into(),
        )
    })
}

/// The assertion's `aud`: the configured audience, else the token endpoint URL.
fn audience(config: &ProviderConfig) -> String {
    config
        .assertion
        .audience
        .clone()
        .unwrap_or_else(|| config.token_url.to_string())
}

/// The private key that signs, named by its credentials key in errors.
fn private_key<'a>(
    credentials: &'a Credentials,
    grant: &'static str,
) -> Result<assertion::SigningKey<'a>, FetchError> {
    let pem = credentials
        .get(Param::PrivateKey)
        .ok_or_else(|| missing(credentials, Param::PrivateKey, grant))?;
    Ok(assertion::SigningKey::Private {
        pem: pem.expose_secret(),
        key_id: credentials.get(Param::KeyId).map(|k| k.expose_secret()),
        key_name: credentials.key_name(Param::PrivateKey),
    })
}

/// A credential the request needs is absent. When a service account JSON key was given, it
/// was meant to provide it: say that the file is not one (without quoting it).
fn missing(credentials: &Credentials, param: Param, grant: &'static str) -> FetchError {
    if credentials.get(Param::ServiceAccountJson).is_some() {
        return FetchError::Configuration(format!(
            "the credentials key `{}` is not a Google service account JSON key (\"type\": \"service_account\" with client_email and private_key), so there is no {}",
            credentials.key_name(Param::ServiceAccountJson),
            param.oauth_name()
        ));
    }
    FetchError::MissingCredential {
        key: credentials.key_name(param).to_string(),
        grant,
    }
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
