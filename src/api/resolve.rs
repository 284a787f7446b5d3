//! Pure translation of a spec (preset + overrides) into the provider model, with errors that
//! name the field to fix.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::provider::config::ServiceAccountSettings;
use crate::provider::{
    ClientAuthentication, Credentials, GrantType, Limits, Param, ProviderConfig, WorkloadIdentity,
};

use super::spec::{AssertionSpec, CredentialKeys, ProviderCredentialSpec, RefreshSpec};
use crate::provider::assertion::{AssertionSettings, REGISTERED_CLAIMS};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{field} is not a valid URL: {reason}")]
    InvalidUrl { field: &'static str, reason: String },
    #[error("{field} `{value}` is not a JSON pointer; write it like /access_token or /data/token")]
    InvalidPointer { field: &'static str, value: String },
    #[error("{field} `{value}` is not a duration; write it like 90s, 10m or 1h30m")]
    InvalidDuration { field: &'static str, value: String },
    #[error(
        "spec.request.fieldNames has unknown parameter `{0}`; use grant_type, client_id, client_secret, username, password, code, redirect_uri, refresh_token or scope"
    )]
    UnknownParameter(String),
    #[error("set either spec.refresh.renewBefore or spec.refresh.renewBeforePercentage, not both")]
    ConflictingRenewal,
    #[error("spec.refresh.renewBeforePercentage must be between 1 and 90, not {0}")]
    PercentageOutOfRange(u8),
    #[error("spec.grant.redirectUri is required for the authorizationCode grant")]
    MissingRedirectUri,
    #[error(
        "spec.grant.assertion.claims cannot set `{0}`: the operator sets iss, sub, aud, exp, iat, nbf and jti, and scope from spec.grant.scope"
    )]
    ReservedClaim(String),
    #[error(
        "this resource uses the {0} grant; only the authorizationCode grant needs a person's consent"
    )]
    NotAuthorizationCode(&'static str),
    #[error(
        "spec.grant.authorizationUrl is not set and the preset has none: set it to the provider's authorization endpoint"
    )]
    MissingAuthorizationUrl,
    #[error("spec.credentials.serviceAccount: {0}")]
    ServiceAccount(&'static str),
    #[error(
        "{0} needs spec.credentials.serviceAccount (the ServiceAccount token is what it sends)"
    )]
    NeedsServiceAccount(&'static str),
    /// A field over the CRD's bound: the API server admitted it before the bound existed.
    #[error(transparent)]
    OverLimit(#[from] super::limits::Exceeded),
}

/// What `token-rotator authorize` needs beyond the token dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationSettings {
    pub authorization_url: url::Url,
    pub redirect_uri: url::Url,
    pub scope: Option<String>,
    pub pkce: bool,
}

/// The authorization request this spec describes (authorizationCode grant only).
pub fn authorization_settings(
    spec: &ProviderCredentialSpec,
) -> Result<AuthorizationSettings, SpecError> {
    let config = provider_config(spec)?;
    if config.grant != crate::provider::GrantType::AuthorizationCode {
        return Err(SpecError::NotAuthorizationCode(config.grant.wire_value()));
    }
    let defaults = spec
        .preset
        .map(|p| p.defaults())
        .unwrap_or_else(crate::provider::DialectDefaults::oauth);
    let grant = spec.grant.as_deref();
    let parse = |field: &'static str, text: &str| {
        url::Url::parse(text.trim()).map_err(|e| SpecError::InvalidUrl {
            field,
            reason: e.to_string(),
        })
    };
    let authorization_url = grant
        .and_then(|g| g.authorization_url.as_deref())
        .or(defaults.authorization_url)
        .ok_or(SpecError::MissingAuthorizationUrl)?;
    let redirect_uri = config
        .redirect_uri
        .as_deref()
        .ok_or(SpecError::MissingRedirectUri)?;
    Ok(AuthorizationSettings {
        authorization_url: parse("spec.grant.authorizationUrl", authorization_url)?,
        redirect_uri: parse("spec.grant.redirectUri", redirect_uri)?,
        scope: config.scope,
        pkce: grant.and_then(|g| g.pkce).unwrap_or(defaults.pkce),
    })
}

/// The dialect this spec describes.
pub fn provider_config(spec: &ProviderCredentialSpec) -> Result<ProviderConfig, SpecError> {
    super::limits::check_spec(spec)?;
    let defaults = spec
        .preset
        .map(|p| p.defaults())
        .unwrap_or_else(crate::provider::DialectDefaults::oauth);
    let token_url =
        url::Url::parse(spec.token_endpoint.url.trim()).map_err(|e| SpecError::InvalidUrl {
            field: "spec.tokenEndpoint.url",
            reason: e.to_string(),
        })?;
    let grant = spec.grant.clone().unwrap_or_default();
    let request = spec.request.clone().unwrap_or_default();
    let response = spec.response.clone().unwrap_or_default();

    let mut field_names = defaults.field_names;
    for (name, wire) in request.field_names {
        if Param::from_oauth_name(&name).is_none() {
            return Err(SpecError::UnknownParameter(name));
        }
        field_names.insert(name, wire);
    }

    let mut mapping = defaults.response;
    let pointer = |field: &'static str, value: Option<String>, slot: &mut String| {
        if let Some(v) = value {
            check_pointer(field, &v)?;
            *slot = v;
        }
        Ok::<(), SpecError>(())
    };
    pointer(
        "spec.response.accessToken",
        response.access_token,
        &mut mapping.access_token,
    )?;
    pointer(
        "spec.response.tokenType",
        response.token_type,
        &mut mapping.token_type,
    )?;
    pointer(
        "spec.response.refreshToken",
        response.refresh_token,
        &mut mapping.refresh_token,
    )?;
    pointer(
        "spec.response.expiresIn",
        response.expires_in,
        &mut mapping.expires_in,
    )?;
    if let Some(v) = response.expires_at {
        check_pointer("spec.response.expiresAt", &v)?;
        mapping.expires_at = Some(v);
    }
    if let Some(secs) = response.default_lifetime_seconds {
        mapping.default_lifetime = Duration::from_secs(secs.into());
    }

    let grant_type = grant.grant_type.unwrap_or(defaults.grant);
    let mut assertion = assertion_settings(grant.assertion.clone().map(|a| *a))?;
    assertion.subject_is_issuer = defaults.assertion_subject_is_issuer;
    if grant_type == crate::provider::GrantType::AuthorizationCode && grant.redirect_uri.is_none() {
        return Err(SpecError::MissingRedirectUri);
    }
    let limits = Limits {
        overall_timeout: spec
            .token_endpoint
            .timeout_seconds
            .map(|s| Duration::from_secs(s.clamp(1, 30).into()))
            .unwrap_or(defaults.limits.overall_timeout),
        ..defaults.limits
    };
    let service_account = service_account_settings(spec, defaults.workload_identity, &token_url)?;
    let mut extra_parameters = grant.extra_parameters;
    if let Some(identity) = defaults.workload_identity {
        workload_identity_rules(
            identity,
            spec,
            service_account.as_ref(),
            grant.scope.as_deref(),
            &mut extra_parameters,
        )?;
    }
    let client_authentication = client_authentication(
        grant_type,
        grant.client_authentication,
        defaults.client_authentication,
        service_account.is_some(),
    )?;
    Ok(ProviderConfig {
        token_url,
        grant: grant_type,
        client_authentication,
        encoding: request.encoding.unwrap_or(defaults.encoding),
        send_grant_type: grant.send_grant_type.unwrap_or(defaults.send_grant_type),
        field_names,
        extra_parameters,
        redirect_uri: grant.redirect_uri,
        scope: grant.scope,
        response: mapping,
        ca_bundle: spec.token_endpoint.ca_bundle.clone(),
        limits,
        supports_refresh: defaults.supports_refresh,
        requests_per_second: spec
            .token_endpoint
            .requests_per_second
            .or(defaults.requests_per_second),
        assertion,
        service_account,
    })
}

/// The lifetime of a ServiceAccount token when spec.credentials.serviceAccount gives none.
pub const DEFAULT_SERVICE_ACCOUNT_TOKEN_SECONDS: u32 = 600;

/// The realm's issuer URL Keycloak expects as the audience: its token URL without
/// `/protocol/openid-connect/token`.
const KEYCLOAK_TOKEN_PATH: &str = "/protocol/openid-connect/token";
/// The audience Entra ID's federated identity credentials use.
pub const ENTRA_AUDIENCE: &str = "api://AzureADTokenExchange";

fn service_account_settings(
    spec: &ProviderCredentialSpec,
    preset: Option<WorkloadIdentity>,
    token_url: &url::Url,
) -> Result<Option<ServiceAccountSettings>, SpecError> {
    let Some(sa) = spec.credentials.service_account.as_deref() else {
        return match preset {
            Some(_) => Err(SpecError::NeedsServiceAccount("this preset")),
            None => Ok(None),
        };
    };
    let audience = match (&sa.audience, preset) {
        (Some(audience), _) => audience.clone(),
        (None, Some(WorkloadIdentity::Keycloak)) => token_url
            .as_str()
            .strip_suffix(KEYCLOAK_TOKEN_PATH)
            .map(str::to_string)
            .ok_or(SpecError::ServiceAccount(
                "audience is required: the keycloak preset derives it only from a token URL ending in /protocol/openid-connect/token",
            ))?,
        (None, Some(WorkloadIdentity::Entra)) => ENTRA_AUDIENCE.to_string(),
        (None, _) => {
            return Err(SpecError::ServiceAccount(
                "audience is required: the one audience the token endpoint expects",
            ));
        }
    };
    // Every pod of the namespace runs as `default`: its tokens are nobody's consent.
    if sa.name == "default" {
        return Err(SpecError::ServiceAccount(
            "name cannot be default: every pod of the namespace runs as it; create a ServiceAccount for this integration",
        ));
    }
    if audience.trim().is_empty() {
        return Err(SpecError::ServiceAccount(
            "audience is required: the one audience the token endpoint expects",
        ));
    }
    Ok(Some(ServiceAccountSettings {
        name: sa.name.clone(),
        audience,
        lifetime_seconds: sa
            .lifetime_seconds
            .unwrap_or(DEFAULT_SERVICE_ACCOUNT_TOKEN_SECONDS)
            .clamp(600, 3600),
    }))
}

/// What the workload identity presets require beyond the dialect: Entra ID a client id and a
/// `.default` scope; Google STS the token's audience as the `audience` parameter and an
/// access token asked for (each unless extraParameters already say).
fn workload_identity_rules(
    identity: WorkloadIdentity,
    spec: &ProviderCredentialSpec,
    service_account: Option<&ServiceAccountSettings>,
    scope: Option<&str>,
    extra: &mut BTreeMap<String, String>,
) -> Result<(), SpecError> {
    match identity {
        WorkloadIdentity::Keycloak => Ok(()),
        WorkloadIdentity::Entra => {
            if spec.credentials.client_id.is_none() {
                return Err(SpecError::ServiceAccount(
                    "the entra preset needs spec.credentials.clientId: the application (client) id of the app registration",
                ));
            }
            if !scope.is_some_and(|s| s.ends_with("/.default")) {
                return Err(SpecError::ServiceAccount(
                    "the entra preset needs spec.grant.scope ending in /.default (e.g. https://graph.microsoft.com/.default): the client credentials grant asks for an application's permissions",
                ));
            }
            Ok(())
        }
        WorkloadIdentity::GoogleSts => {
            if let Some(sa) = service_account {
                extra
                    .entry("audience".into())
                    .or_insert_with(|| sa.audience.clone());
            }
            extra
                .entry("requested_token_type".into())
                .or_insert_with(|| GOOGLE_REQUESTED_TOKEN_TYPE.into());
            Ok(())
        }
    }
}

const GOOGLE_REQUESTED_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How the client authenticates. With a ServiceAccount there is no secret to send: its token
/// is the client assertion (the default, for grants that take client authentication) or the
/// grant itself, and methods that need a secret are refused; without one, nothing can send a
/// ServiceAccount token.
fn client_authentication(
    grant: GrantType,
    asked: Option<ClientAuthentication>,
    preset: ClientAuthentication,
    service_account: bool,
) -> Result<ClientAuthentication, SpecError> {
    use ClientAuthentication as C;
    if !service_account {
        if asked == Some(C::ServiceAccountToken) {
            return Err(SpecError::NeedsServiceAccount(
                "spec.grant.clientAuthentication serviceAccountToken",
            ));
        }
        if grant == GrantType::TokenExchange {
            return Err(SpecError::NeedsServiceAccount("the tokenExchange grant"));
        }
        return Ok(asked.unwrap_or(preset));
    }
    if matches!(grant, GrantType::Password | GrantType::AuthorizationCode) {
        return Err(SpecError::ServiceAccount(
            "the password and authorizationCode grants need a credentials Secret; use clientCredentials, jwtBearer or tokenExchange",
        ));
    }
    let default = match grant {
        GrantType::ClientCredentials => C::ServiceAccountToken,
        _ => C::None,
    };
    match asked.unwrap_or(default) {
        method @ (C::ServiceAccountToken | C::None) => Ok(method),
        _ => Err(SpecError::ServiceAccount(
            "spec.grant.clientAuthentication must be serviceAccountToken or none: the other methods send a secret, and there is no credentials Secret",
        )),
    }
}

/// The credentials of a resource that authenticates as a ServiceAccount: only the client id
/// the spec gives (the token itself is minted right before each request).
pub fn credentials_from_spec(spec: &ProviderCredentialSpec) -> Credentials {
    let mut credentials = Credentials::new();
    if let Some(id) = &spec.credentials.client_id {
        credentials.insert(Param::ClientId, CLIENT_ID_FIELD, id.clone());
    }
    credentials
}

const CLIENT_ID_FIELD: &str = "spec.credentials.clientId";

/// `spec.grant.assertion`, resolved; the claims the operator sets itself are refused.
fn assertion_settings(spec: Option<AssertionSpec>) -> Result<AssertionSettings, SpecError> {
    let spec = spec.unwrap_or_default();
    if let Some(claim) = spec
        .claims
        .keys()
        .find(|k| REGISTERED_CLAIMS.contains(&k.as_str()) || *k == "scope")
    {
        return Err(SpecError::ReservedClaim(claim.clone()));
    }
    let defaults = AssertionSettings::default();
    Ok(AssertionSettings {
        algorithm: spec.algorithm,
        audience: spec.audience,
        lifetime: spec
            .lifetime_seconds
            .map(|s| Duration::from_secs(s.clamp(10, 3600).into()))
            .unwrap_or(defaults.lifetime),
        issuer: spec.issuer,
        subject: spec.subject,
        subject_is_issuer: defaults.subject_is_issuer,
        claims: spec.claims,
    })
}

fn check_pointer(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(SpecError::InvalidPointer {
            field,
            value: value.to_string(),
        })
    }
}

/// The Secret key each credential parameter is read from.
pub fn credential_key_names(keys: Option<&CredentialKeys>) -> BTreeMap<Param, String> {
    let keys = keys.cloned().unwrap_or_default();
    let pick = |custom: Option<String>, param: Param| {
        (
            param,
            custom.unwrap_or_else(|| param.oauth_name().to_string()),
        )
    };
    BTreeMap::from([
        pick(keys.client_id, Param::ClientId),
        pick(keys.client_secret, Param::ClientSecret),
        pick(keys.username, Param::Username),
        pick(keys.password, Param::Password),
        pick(keys.code, Param::Code),
        pick(keys.refresh_token, Param::RefreshToken),
        pick(keys.private_key, Param::PrivateKey),
        pick(keys.key_id, Param::KeyId),
        pick(keys.tls_certificate, Param::TlsCertificate),
        pick(keys.tls_key, Param::TlsKey),
        pick(keys.service_account_json, Param::ServiceAccountJson),
    ])
}

/// Credentials read from a Secret's decoded data. Values are trimmed of a trailing newline,
/// which `kubectl create secret --from-file` often leaves behind.
pub fn credentials_from_data(
    spec: &ProviderCredentialSpec,
    data: &BTreeMap<String, Vec<u8>>,
) -> Credentials {
    let mut credentials = Credentials::new();
    for (param, key) in credential_key_names(spec.credentials.keys.as_deref()) {
        let value = data
            .get(&key)
            .map(|bytes| {
                String::from_utf8_lossy(bytes)
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            })
            .unwrap_or_default();
        credentials.insert(param, key, value);
    }
    service_account_fields(&mut credentials);
    if let (None, Some(id)) = (
        credentials.get(Param::ClientId),
        &spec.credentials.client_id,
    ) {
        credentials.insert(Param::ClientId, CLIENT_ID_FIELD, id.clone());
    }
    credentials
}

/// The fields of a Google service account JSON key, where the plain keys are absent.
fn service_account_fields(credentials: &mut Credentials) {
    #[derive(serde::Deserialize)]
    struct ServiceAccountKey {
        #[serde(rename = "type")]
        kind: String,
        client_email: String,
        private_key: String,
        #[serde(default)]
        private_key_id: Option<String>,
    }
    let Some(json) = credentials.get(Param::ServiceAccountJson) else {
        return;
    };
    let Ok(key) = serde_json::from_str::<ServiceAccountKey>(json.expose_secret()) else {
        return;
    };
    if key.kind != "service_account" {
        return;
    }
    let source = credentials.key_name(Param::ServiceAccountJson).to_string();
    for (param, field, value) in [
        (Param::ClientId, "client_email", Some(key.client_email)),
        (Param::PrivateKey, "private_key", Some(key.private_key)),
        (Param::KeyId, "private_key_id", key.private_key_id),
    ] {
        if let (None, Some(value)) = (credentials.get(param), value) {
            credentials.insert(param, format!("{source} ({field})"), value);
        }
    }
}

/// Renewal policy, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewBefore {
    Percentage(u8),
    Fixed(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalPolicy {
    pub renew_before: RenewBefore,
    pub minimum_margin: Duration,
}

pub const DEFAULT_RENEW_BEFORE_PERCENTAGE: u8 = 33;
pub const DEFAULT_MINIMUM_MARGIN: Duration = Duration::from_secs(120);

pub fn renewal_policy(refresh: Option<&RefreshSpec>) -> Result<RenewalPolicy, SpecError> {
    let refresh = refresh.cloned().unwrap_or_default();
    let renew_before = match (refresh.renew_before_percentage, refresh.renew_before) {
        (Some(_), Some(_)) => return Err(SpecError::ConflictingRenewal),
        (Some(p), None) if !(1..=90).contains(&p) => {
            return Err(SpecError::PercentageOutOfRange(p));
        }
        (Some(p), None) => RenewBefore::Percentage(p),
        (None, Some(d)) => RenewBefore::Fixed(parse_duration("spec.refresh.renewBefore", &d)?),
        (None, None) => RenewBefore::Percentage(DEFAULT_RENEW_BEFORE_PERCENTAGE),
    };
    let minimum_margin = match refresh.minimum_margin {
        Some(d) => parse_duration("spec.refresh.minimumMargin", &d)?,
        None => DEFAULT_MINIMUM_MARGIN,
    };
    Ok(RenewalPolicy {
        renew_before,
        minimum_margin,
    })
}

/// Go duration syntax (as `metav1.Duration` and the CRD's CEL `duration()` accept: 90s, 10m,
/// 1h30m, 1.5h), parsed by kube's own `Duration`. Negative values are refused, and the length
/// and each number are bounded first so the sum cannot overflow (kube's parser would panic).
pub fn parse_duration(field: &'static str, value: &str) -> Result<Duration, SpecError> {
    let invalid = || SpecError::InvalidDuration {
        field,
        value: value.chars().take(MAX_DURATION_LEN).collect(),
    };
    let s = value.trim();
    let longest_number = s
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(str::len)
        .max()
        .unwrap_or(0);
    if s.is_empty() || s.len() > MAX_DURATION_LEN || longest_number > 9 || s.starts_with(['-', '+'])
    {
        return Err(invalid());
    }
    let parsed: kube::core::Duration = s.parse().map_err(|_| invalid())?;
    Ok(parsed.into())
}

/// Longer than any sensible duration ("999999999h59m59s" is 17 characters).
const MAX_DURATION_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{GrantRequest, build_request};
    use secrecy::SecretString;

    const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.sa-token-claims.sa-token-signature";

    fn sa_spec(extra: serde_json::Value) -> ProviderCredentialSpec {
        let mut spec = serde_json::json!({
            "tokenEndpoint": {"url": "https://idp.example.test/realms/r/protocol/openid-connect/token"},
            "credentials": {"serviceAccount": {"name": "billing", "audience": "https://idp.example.test/realms/r"}},
            "target": {"secretName": "token"},
        });
        json_merge(&mut spec, extra);
        serde_json::from_value(spec).unwrap()
    }

    fn json_merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    /// The form body a spec sends with a minted ServiceAccount token.
    fn sent(spec: &ProviderCredentialSpec) -> (BTreeMap<String, String>, Vec<String>) {
        let config = provider_config(spec).unwrap();
        let mut credentials = credentials_from_spec(spec);
        credentials.insert(Param::ServiceAccountToken, "minted", SA_TOKEN);
        let request = build_request(&config, &credentials, &GrantRequest::Primary).unwrap();
        let body = secrecy::ExposeSecret::expose_secret(&request.body).to_string();
        let fields = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let secrets = request
            .sent_secrets
            .iter()
            .map(|s: &SecretString| s.expose_secret().to_string())
            .collect();
        (fields, secrets)
    }

    #[test]
    fn a_service_account_token_is_the_client_assertion_by_default() {
        let (fields, secrets) = sent(&sa_spec(serde_json::json!({})));
        assert_eq!(fields["grant_type"], "client_credentials");
        assert_eq!(fields["client_assertion"], SA_TOKEN);
        assert_eq!(
            fields["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        // Keycloak refuses a client_id that differs from the token's sub: none unless given.
        assert!(!fields.contains_key("client_id"), "{fields:?}");
        assert!(
            secrets.contains(&SA_TOKEN.to_string()),
            "scrubbed like any credential"
        );

        let entra = sa_spec(serde_json::json!({
            "credentials": {"clientId": "app-1234"},
            "grant": {"scope": "https://graph.example.test/.default"},
        }));
        let (fields, _) = sent(&entra);
        assert_eq!(fields["client_id"], "app-1234");
        assert_eq!(fields["client_assertion"], SA_TOKEN);
        assert_eq!(fields["scope"], "https://graph.example.test/.default");
    }

    #[test]
    fn a_service_account_token_is_the_subject_of_a_token_exchange() {
        let spec = sa_spec(
            serde_json::json!({"grant": {"type": "tokenExchange", "extraParameters": {
                "audience": "//iam.example.test/projects/1/locations/global/workloadIdentityPools/p/providers/k",
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }}}),
        );
        let (fields, secrets) = sent(&spec);
        assert_eq!(
            fields["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange"
        );
        assert_eq!(fields["subject_token"], SA_TOKEN);
        assert_eq!(
            fields["subject_token_type"],
            "urn:ietf:params:oauth:token-type:jwt"
        );
        assert_eq!(
            fields["requested_token_type"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        assert!(fields["audience"].starts_with("//iam.example.test/"));
        assert!(!fields.contains_key("client_assertion"), "{fields:?}");
        assert!(secrets.contains(&SA_TOKEN.to_string()));
        // The subject token type is data too.
        let spec = sa_spec(
            serde_json::json!({"grant": {"type": "tokenExchange", "extraParameters": {
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            }}}),
        );
        assert_eq!(
            sent(&spec).0["subject_token_type"],
            "urn:ietf:params:oauth:token-type:id_token"
        );
    }

    #[test]
    fn a_service_account_token_is_the_jwt_bearer_assertion() {
        let spec = sa_spec(serde_json::json!({"grant": {"type": "jwtBearer"}}));
        let (fields, _) = sent(&spec);
        assert_eq!(
            fields["grant_type"],
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        assert_eq!(fields["assertion"], SA_TOKEN);
        assert!(!fields.contains_key("client_assertion"), "{fields:?}");
    }

    #[test]
    fn without_a_minted_token_nothing_is_built() {
        let spec = sa_spec(serde_json::json!({}));
        let config = provider_config(&spec).unwrap();
        let error = build_request(
            &config,
            &credentials_from_spec(&spec),
            &GrantRequest::Primary,
        )
        .unwrap_err();
        assert!(
            matches!(&error, crate::provider::FetchError::Configuration(m) if m.contains("no ServiceAccount token was minted")),
            "{error}"
        );
    }

    #[test]
    fn service_account_specs_that_cannot_work_are_refused() {
        let refused = |extra: serde_json::Value| provider_config(&sa_spec(extra)).unwrap_err();
        for method in ["basic", "body", "privateKeyJwt", "clientSecretJwt", "tls"] {
            assert!(matches!(
                refused(serde_json::json!({"grant": {"clientAuthentication": method}})),
                SpecError::ServiceAccount(_)
            ));
        }
        for grant in ["password", "authorizationCode"] {
            assert!(matches!(
                refused(
                    serde_json::json!({"grant": {"type": grant, "redirectUri": "https://a.test/cb"}})
                ),
                SpecError::ServiceAccount(_)
            ));
        }
        assert!(matches!(
            refused(serde_json::json!({"credentials": {"serviceAccount": {"name": "default"}}})),
            SpecError::ServiceAccount(m) if m.contains("default")
        ));
        // Without a ServiceAccount, nothing sends its token.
        let secret = |grant: serde_json::Value| {
            let mut spec = serde_json::json!({
                "tokenEndpoint": {"url": "https://idp.example.test/token"},
                "credentials": {"secretRef": {"name": "c"}},
                "target": {"secretName": "token"},
                "grant": grant,
            });
            json_merge(&mut spec, serde_json::json!({}));
            provider_config(&serde_json::from_value(spec).unwrap())
        };
        assert!(matches!(
            secret(serde_json::json!({"type": "tokenExchange"})),
            Err(SpecError::NeedsServiceAccount(_))
        ));
        assert!(matches!(
            secret(serde_json::json!({"clientAuthentication": "serviceAccountToken"})),
            Err(SpecError::NeedsServiceAccount(_))
        ));
    }

    #[test]
    fn workload_identity_presets() {
        let preset = |preset: &str, url: &str, extra: serde_json::Value| {
            let mut spec = serde_json::json!({
                "preset": preset,
                "tokenEndpoint": {"url": url},
                "credentials": {"serviceAccount": {"name": "billing"}},
                "target": {"secretName": "token"},
            });
            json_merge(&mut spec, extra);
            serde_json::from_value::<ProviderCredentialSpec>(spec).unwrap()
        };
        let audience = |spec: &ProviderCredentialSpec| {
            provider_config(spec)
                .unwrap()
                .service_account
                .unwrap()
                .audience
        };

        // Keycloak: the realm's issuer URL, and never a client_id (it must equal the sub).
        let keycloak = preset(
            "keycloak",
            "https://kc.example.test/realms/apps/protocol/openid-connect/token",
            serde_json::json!({"credentials": {"clientId": "billing"}}),
        );
        assert_eq!(audience(&keycloak), "https://kc.example.test/realms/apps");
        let (fields, _) = sent(&keycloak);
        assert_eq!(fields["client_assertion"], SA_TOKEN);
        assert!(!fields.contains_key("client_id"), "{fields:?}");
        assert!(matches!(
            provider_config(&preset("keycloak", "https://kc.example.test/token", serde_json::json!({}))),
            Err(SpecError::ServiceAccount(m)) if m.contains("openid-connect")
        ));

        // Entra ID: its audience, a client id and a .default scope.
        let entra_url = "https://login.example.test/tenant/oauth2/v2.0/token";
        let entra = preset(
            "entra",
            entra_url,
            serde_json::json!({"credentials": {"clientId": "app-1"}, "grant": {"scope": "https://graph.example.test/.default"}}),
        );
        assert_eq!(audience(&entra), ENTRA_AUDIENCE);
        let (fields, _) = sent(&entra);
        assert_eq!(fields["client_id"], "app-1");
        assert_eq!(fields["client_assertion"], SA_TOKEN);
        for refused in [
            serde_json::json!({"grant": {"scope": "https://graph.example.test/.default"}}),
            serde_json::json!({"credentials": {"clientId": "app-1"}, "grant": {"scope": "User.Read"}}),
        ] {
            assert!(matches!(
                provider_config(&preset("entra", entra_url, refused)),
                Err(SpecError::ServiceAccount(_))
            ));
        }

        // Google STS: the token's audience is the exchange's audience; an access token back.
        let pool =
            "//iam.example.test/projects/1/locations/global/workloadIdentityPools/p/providers/k";
        let sts = preset(
            "googleSts",
            "https://sts.example.test/v1/token",
            serde_json::json!({"credentials": {"serviceAccount": {"audience": pool}}}),
        );
        let (fields, _) = sent(&sts);
        assert_eq!(
            fields["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange"
        );
        assert_eq!(fields["subject_token"], SA_TOKEN);
        assert_eq!(fields["audience"], pool);
        assert_eq!(
            fields["requested_token_type"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        // Without an audience (no default for it), or without a ServiceAccount: refused.
        assert!(
            provider_config(&preset(
                "googleSts",
                "https://sts.example.test/v1/token",
                serde_json::json!({})
            ))
            .is_err()
        );
        let with_secret: ProviderCredentialSpec = serde_json::from_value(serde_json::json!({
            "preset": "keycloak",
            "tokenEndpoint": {"url": "https://kc.example.test/realms/a/protocol/openid-connect/token"},
            "credentials": {"secretRef": {"name": "c"}},
            "target": {"secretName": "token"},
        }))
        .unwrap();
        assert!(matches!(
            provider_config(&with_secret),
            Err(SpecError::NeedsServiceAccount(_))
        ));
    }

    #[test]
    fn the_service_account_audience_and_lifetime_are_request_inputs() {
        let base = sa_spec(serde_json::json!({}));
        let digest = |spec: &ProviderCredentialSpec| {
            crate::digest::request_inputs(
                "uid",
                &provider_config(spec).unwrap(),
                &credentials_from_spec(spec),
            )
        };
        let other_audience = sa_spec(
            serde_json::json!({"credentials": {"serviceAccount": {"audience": "api://AzureADTokenExchange"}}}),
        );
        let longer = sa_spec(
            serde_json::json!({"credentials": {"serviceAccount": {"lifetimeSeconds": 3600}}}),
        );
        let other_account =
            sa_spec(serde_json::json!({"credentials": {"serviceAccount": {"name": "other"}}}));
        for changed in [&other_audience, &longer, &other_account] {
            assert_ne!(digest(&base), digest(changed));
        }
        assert_eq!(
            provider_config(&base)
                .unwrap()
                .service_account
                .unwrap()
                .lifetime_seconds,
            DEFAULT_SERVICE_ACCOUNT_TOKEN_SECONDS
        );
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration("f", s);
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("1m0.5s"), Ok(Duration::from_millis(60_500)));
        for bad in [
            "",
            "10",
            "m",
            "10 minutes",
            "-5m",
            "+5m",
            "1d",
            "1e3h",
            "9999999999h",
            "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
            "inf",
            "NaNs",
        ] {
            assert!(d(bad).is_err(), "{bad}");
        }
        // The largest accepted values do not overflow.
        assert!(d("999999999h999999999m").is_ok());
    }
}
