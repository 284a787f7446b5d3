//! The authorization request (RFC 6749 §4.1.1, with RFC 7636 PKCE) and reading the answer the
//! browser was redirected with. Pure: no I/O here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::api::AuthorizationSettings;
use crate::cli::terminal_safe;
use crate::provider::scrub::Scrubber;

/// One consent attempt: the URL a person opens, and what its answer must carry.
pub struct Consent {
    pub url: url::Url,
    /// Sent as `state` and checked on return (RFC 6749 §10.12: an answer to another request,
    /// or a forged one, is refused).
    state: SecretString,
    /// The PKCE verifier, sent with the code; its S256 challenge is in the URL.
    pub verifier: Option<SecretString>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error(
        "the address is not a URL ({0}); paste the whole address the browser was sent to after consent"
    )]
    NotUrl(String),
    #[error(
        "the answer carries no `code` and no `error`: is this the address the provider redirected to?"
    )]
    NoCode,
    #[error(
        "the answer's `state` does not match this request (an answer to an earlier attempt, or a forged one); start again"
    )]
    StateMismatch,
    #[error("the provider refused the authorization: {error}{description}")]
    Refused { error: String, description: String },
}

/// 32 random bytes, base64url: 43 characters, within RFC 7636's 43–128 for a verifier.
fn random_token() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Consent {
    pub fn new(settings: &AuthorizationSettings, client_id: &str) -> Consent {
        let state = random_token();
        let verifier = settings.pkce.then(random_token);
        let mut url = settings.authorization_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", settings.redirect_uri.as_str());
            if let Some(scope) = &settings.scope {
                query.append_pair("scope", scope);
            }
            query.append_pair("state", state.expose_secret());
            if let Some(v) = &verifier {
                query
                    .append_pair("code_challenge", &s256_challenge(v.expose_secret()))
                    .append_pair("code_challenge_method", "S256");
            }
        }
        Consent {
            url,
            state,
            verifier,
        }
    }

    /// The code in the address the browser was redirected to, once its `state` is checked.
    pub fn code_from(&self, redirected_to: &str) -> Result<SecretString, AnswerError> {
        let shown = |text: &str| crate::provider::scrub::truncate_chars(text, 80);
        let url = url::Url::parse(redirected_to.trim())
            .map_err(|e| AnswerError::NotUrl(shown(&e.to_string())))?;
        self.code_from_query(url.query().unwrap_or_default())
    }

    /// The same, from the query string alone (what the loopback listener receives).
    pub fn code_from_query(&self, query: &str) -> Result<SecretString, AnswerError> {
        let mut code = None;
        let mut state = None;
        let mut error = None;
        let mut description = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                "error_description" => description = Some(v.into_owned()),
                _ => {}
            }
        }
        if error.is_none() && code.as_deref().is_none_or(str::is_empty) {
            return Err(AnswerError::NoCode);
        }
        // A refusal too counts only with this request's state (RFC 6749 §4.1.2.1 returns it):
        // anything on this machine can send one, and it would end the consent.
        if state.as_deref() != Some(self.state.expose_secret()) {
            return Err(AnswerError::StateMismatch);
        }
        if let Some(error) = error {
            // The provider's words reach a terminal: without control characters, bounded.
            let scrubber = Scrubber::new([self.state.expose_secret()]);
            let shown = |text: &str| scrubber.excerpt(&terminal_safe(text));
            return Err(AnswerError::Refused {
                error: shown(&error),
                description: description
                    .map(|d| format!(" ({})", shown(&d)))
                    .unwrap_or_default(),
            });
        }
        Ok(SecretString::from(code.unwrap_or_default()))
    }

    #[cfg(test)]
    fn state(&self) -> &str {
        self.state.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pkce: bool) -> AuthorizationSettings {
        AuthorizationSettings {
            authorization_url: "https://auth.example.test/authorize?tenant=a"
                .parse()
                .unwrap(),
            redirect_uri: "http://127.0.0.1:8400/callback".parse().unwrap(),
            scope: Some("read write".into()),
            pkce,
        }
    }

    fn query(url: &url::Url) -> Vec<(String, String)> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_url_keeps_its_query_and_carries_state_and_the_challenge() {
        let consent = Consent::new(&settings(true), "client 1");
        let verifier = consent.verifier.as_ref().expect("pkce").expose_secret();
        assert_eq!(verifier.len(), 43);
        assert_eq!(
            query(&consent.url),
            [
                ("tenant", "a"),
                ("response_type", "code"),
                ("client_id", "client 1"),
                ("redirect_uri", "http://127.0.0.1:8400/callback"),
                ("scope", "read write"),
                ("state", consent.state()),
                ("code_challenge", &s256_challenge(verifier)),
                ("code_challenge_method", "S256"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(consent.url.host_str(), Some("auth.example.test"));
        // Two attempts never share a state or a verifier.
        let other = Consent::new(&settings(true), "client 1");
        assert_ne!(other.state(), consent.state());
        assert_ne!(
            other.verifier.as_ref().unwrap().expose_secret(),
            consent.verifier.as_ref().unwrap().expose_secret()
        );
    }

    #[test]
    fn without_pkce_no_challenge_is_sent() {
        let consent = Consent::new(&settings(false), "c");
        assert!(consent.verifier.is_none());
        assert!(
            !query(&consent.url)
                .iter()
                .any(|(k, _)| k.starts_with("code_"))
        );
    }

    #[test]
    fn the_answer_must_carry_this_requests_state() {
        let consent = Consent::new(&settings(false), "c");
        let back = |q: &str| consent.code_from(&format!("https://app.example.test/cb?{q}"));
        let state = consent.state().to_string();
        let code = back(&format!("code=a%2Bb&state={state}")).expect("code");
        assert_eq!(code.expose_secret(), "a+b");
        assert_eq!(
            back("code=abc&state=someone-elses").unwrap_err(),
            AnswerError::StateMismatch
        );
        assert_eq!(back("code=abc").unwrap_err(), AnswerError::StateMismatch);
        assert_eq!(
            back(&format!("state={state}")).unwrap_err(),
            AnswerError::NoCode
        );
        assert_eq!(
            back(&format!("code=&state={state}")).unwrap_err(),
            AnswerError::NoCode
        );
        assert!(matches!(
            consent.code_from("not a url"),
            Err(AnswerError::NotUrl(_))
        ));
    }

    #[test]
    fn a_refusal_is_reported_without_echoing_the_state() {
        let consent = Consent::new(&settings(false), "c");
        let state = consent.state().to_string();
        let err = consent
            .code_from(&format!(
                "https://app.example.test/cb?error=access_denied&error_description=user+said+no+to+{state}&state={state}"
            ))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("access_denied (user said no to [REDACTED])"),
            "{text}"
        );
        assert!(!text.contains(&state));
    }

    #[test]
    fn a_refusal_counts_only_with_this_requests_state() {
        let consent = Consent::new(&settings(false), "c");
        let state = consent.state().to_string();
        for forged in [
            "error=access_denied".to_string(),
            "error=access_denied&state=".to_string(),
            "error=access_denied&state=someone-elses".to_string(),
            format!("error=access_denied&state={state}x"),
            format!("error=access_denied&code=abc&state={}", &state[1..]),
        ] {
            assert_eq!(
                consent.code_from_query(&forged).unwrap_err(),
                AnswerError::StateMismatch,
                "{forged}"
            );
        }
        assert_eq!(
            consent
                .code_from_query(&format!("error=access_denied&state={state}"))
                .unwrap_err(),
            AnswerError::Refused {
                error: "access_denied".into(),
                description: String::new()
            }
        );
    }

    #[test]
    fn the_providers_words_are_shown_without_control_characters_and_bounded() {
        let consent = Consent::new(&settings(false), "c");
        let state = consent.state().to_string();
        let hostile = format!(
            "\u{1b}]0;pwned\u{7}\u{1b}[2Jno\r\nway\u{9b}1m\u{202e}gpj.exe\u{7f}\0{}",
            "x".repeat(10_000)
        );
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("error", "access_denied\u{1b}[8m")
            .append_pair("error_description", &hostile)
            .append_pair("state", &state)
            .finish();
        let err = consent.code_from_query(&query).unwrap_err();
        let AnswerError::Refused { error, description } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(error, "access_denied[8m");
        assert!(
            description.starts_with(" (]0;pwned[2Jno way1mgpj.exexxx"),
            "{description:?}"
        );
        let text = err.to_string();
        assert!(text.chars().count() < 500, "{}", text.len());
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{text:?}"
        );
    }
}
