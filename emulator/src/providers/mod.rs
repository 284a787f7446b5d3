//! The four provider dialects. Each module turns a fully read token request into the
//! provider's documented answer; `Ok` means a token was issued (for the counters).

pub(crate) mod carrental;
pub(crate) mod reltio;
pub(crate) mod rently;
pub(crate) mod retently;

use axum::response::Response;
use jiff::Timestamp;
use serde_json::Value;

use crate::chains::ChainId;
use crate::provider::Provider;
use crate::state::Inner;
use crate::tokens::Issued;
use crate::wire::TokenRequest;

/// `Ok`: a token was issued; `Err`: the provider's error answer.
pub(crate) type Outcome = Result<Response, Response>;

pub(crate) fn token(p: Provider, inner: &mut Inner, req: &TokenRequest, now: Timestamp) -> Outcome {
    match p {
        Provider::Rently => rently::token(inner, req, now),
        Provider::Carrental => carrental::token(inner, req, now),
        Provider::Retently => retently::token(inner, req, now),
        Provider::Reltio => reltio::token(inner, req, now),
    }
}

/// The chain of a refresh token of `p`, live or replaced (providers without refresh tokens
/// have no chains).
pub(crate) fn chain_of(p: Provider, inner: &Inner, refresh_token: &str) -> Option<ChainId> {
    match p {
        Provider::Retently => inner.retently.chain_of(refresh_token),
        Provider::Reltio => inner.reltio.chain_of(refresh_token),
        Provider::Rently | Provider::Carrental => None,
    }
}

/// The provider's success body without its access-token field (the `MissingToken` fault).
pub(crate) fn success_without_token(p: Provider, lifetime_secs: u64, now: Timestamp) -> Value {
    // Built with empty tokens, which are then dropped (Retently's refresh token too: a
    // refresh token without an access token would be no real answer either).
    let mut body = match p {
        Provider::Rently => rently::body("", lifetime_secs),
        Provider::Carrental => carrental::body("", lifetime_secs, now),
        Provider::Retently => retently::body("", "", lifetime_secs),
        Provider::Reltio => reltio::body("", None, lifetime_secs),
    };
    if let Some(m) = body.as_object_mut() {
        m.retain(|_, v| v != "");
    }
    body
}

/// Who `token` belongs to, when it is a currently valid access token of `p`. For Rently the
/// token's tenant must also match `host` when one is given (the resource server's check).
pub(crate) fn validate(
    p: Provider,
    inner: &Inner,
    token: &str,
    host: Option<&str>,
    now: Timestamp,
) -> Option<Issued> {
    match p {
        Provider::Rently => rently::validate(inner, token, host, now),
        Provider::Carrental => carrental::validate(inner, token, now),
        Provider::Retently | Provider::Reltio => {
            inner.provider(p).access_tokens.valid(token, now).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_bodies_keep_everything_but_tokens() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let keys = |p| {
            let body = success_without_token(p, 60, now);
            let mut k: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k.join(",")
        };
        assert_eq!(keys(Provider::Rently), "expires_in,token_type");
        assert_eq!(keys(Provider::Carrental), "expires,expiresIn,issued,type");
        assert_eq!(keys(Provider::Retently), "expires_in");
        assert_eq!(keys(Provider::Reltio), "expires_in,scope,token_type");
    }
}
