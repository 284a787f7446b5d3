//! Is a token due, and which grant to spend. Pure: the clock is a field of the facts.

use jiff::Timestamp;

use crate::provider::GrantType;

/// Why a token is requested now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueReason {
    NoToken,
    Expired,
    RenewalTime,
    InputsChanged,
    RefreshRequested,
    TargetChanged,
}

impl DueReason {
    pub fn describe(self) -> &'static str {
        match self {
            DueReason::NoToken => "no token yet",
            DueReason::Expired => "the token expired",
            DueReason::RenewalTime => "renewal time reached",
            DueReason::InputsChanged => "the request settings or credentials changed",
            DueReason::RefreshRequested => "a refresh was requested by annotation",
            DueReason::TargetChanged => "the target Secret's settings changed or it was altered",
        }
    }
}

/// What the current token looks like, as far as the decision is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentToken {
    pub expires_at: Timestamp,
    pub next_refresh_at: Timestamp,
}

/// Facts gathered by the controller before deciding.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: Timestamp,
    /// The token in the target Secret, if it is the one the status describes.
    pub current: Option<CurrentToken>,
    /// The renewal time of the last token written, valid or not: a token that expired at once
    /// (a zero lifetime) is not replaced before it, so no answer can make us loop.
    pub last_renewal: Option<Timestamp>,
    /// The target Secret was rendered from the current target settings.
    pub target_up_to_date: bool,
    /// Request settings and credentials are the ones the current token was issued with.
    pub inputs_unchanged: bool,
    /// The last request with these (changed) inputs failed: they wait for backoff too.
    pub inputs_failed_before: bool,
    /// A new value of the refresh annotation is waiting.
    pub refresh_requested: bool,
    /// Earliest time a retry is allowed after a failure.
    pub retry_not_before: Option<Timestamp>,
    /// The last failure rejected these very inputs.
    pub rejected_with_same_inputs: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Request a token now.
    Fetch(DueReason),
    /// Nothing to do until then.
    WaitUntil(Timestamp),
    /// Credentials were rejected and nothing changed since: do not retry (accounts lock).
    HoldRejected,
}

pub fn decide(f: &Facts) -> Decision {
    if f.rejected_with_same_inputs && !f.refresh_requested {
        return Decision::HoldRejected;
    }
    let reason = match &f.current {
        None => DueReason::NoToken,
        Some(t) if t.expires_at <= f.now => DueReason::Expired,
        Some(_) if !f.inputs_unchanged => DueReason::InputsChanged,
        Some(_) if f.refresh_requested => DueReason::RefreshRequested,
        Some(_) if !f.target_up_to_date => DueReason::TargetChanged,
        Some(t) if t.next_refresh_at <= f.now => DueReason::RenewalTime,
        Some(t) => return Decision::WaitUntil(t.next_refresh_at),
    };
    let user_asked = !f.inputs_unchanged || f.refresh_requested;
    if let Some(at) = f.last_renewal.filter(|at| *at > f.now)
        && matches!(reason, DueReason::NoToken | DueReason::Expired)
        && !user_asked
    {
        return Decision::WaitUntil(at);
    }
    // Backoff applies to scheduled work, not to an explicit request or to inputs not tried yet.
    let waives_backoff = reason == DueReason::RefreshRequested
        || (reason == DueReason::InputsChanged && !f.inputs_failed_before);
    match f.retry_not_before {
        Some(at) if at > f.now && !waives_backoff => Decision::WaitUntil(at),
        _ => Decision::Fetch(reason),
    }
}

/// Which grant to spend, from what is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantChoice {
    /// A refresh token from the state Secret.
    StoredRefreshToken,
    /// A new seed refresh token from the credentials Secret.
    SeedRefreshToken,
    /// The primary grant (for authorization code: an unspent code).
    Primary,
    /// Only a person can continue: the code is spent and no refresh token is held.
    ReauthorizationRequired,
}

#[derive(Clone, Copy, Debug)]
pub struct GrantFacts {
    pub primary: GrantType,
    pub supports_refresh: bool,
    pub has_stored_refresh_token: bool,
    /// A seed refresh token is present in the credentials and differs from the last seed used.
    pub has_new_seed: bool,
    /// An authorization code is present and was not spent before.
    pub has_unspent_code: bool,
}

pub fn choose_grant(g: &GrantFacts) -> GrantChoice {
    if g.supports_refresh && g.has_new_seed {
        return GrantChoice::SeedRefreshToken;
    }
    if g.primary == GrantType::AuthorizationCode && g.has_unspent_code {
        // A newly pasted code means the user re-consented: it wins over an old chain.
        return GrantChoice::Primary;
    }
    if g.supports_refresh && g.has_stored_refresh_token {
        return GrantChoice::StoredRefreshToken;
    }
    match g.primary {
        GrantType::AuthorizationCode => GrantChoice::ReauthorizationRequired,
        _ => GrantChoice::Primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn facts(now: &str) -> Facts {
        Facts {
            now: at(now),
            current: Some(CurrentToken {
                expires_at: at("2026-01-01T01:00:00Z"),
                next_refresh_at: at("2026-01-01T00:40:00Z"),
            }),
            last_renewal: None,
            target_up_to_date: true,
            inputs_unchanged: true,
            inputs_failed_before: false,
            refresh_requested: false,
            retry_not_before: None,
            rejected_with_same_inputs: false,
        }
    }

    #[test]
    fn decisions() {
        let f = facts("2026-01-01T00:10:00Z");
        assert_eq!(decide(&f), Decision::WaitUntil(at("2026-01-01T00:40:00Z")));
        assert_eq!(
            decide(&facts("2026-01-01T00:40:00Z")),
            Decision::Fetch(DueReason::RenewalTime)
        );
        assert_eq!(
            decide(&facts("2026-01-01T01:00:00Z")),
            Decision::Fetch(DueReason::Expired)
        );
        assert_eq!(
            decide(&Facts {
                current: None,
                ..f.clone()
            }),
            Decision::Fetch(DueReason::NoToken)
        );
        assert_eq!(
            decide(&Facts {
                inputs_unchanged: false,
                ..f.clone()
            }),
            Decision::Fetch(DueReason::InputsChanged)
        );
        assert_eq!(
            decide(&Facts {
                refresh_requested: true,
                ..f.clone()
            }),
            Decision::Fetch(DueReason::RefreshRequested)
        );
        assert_eq!(
            decide(&Facts {
                target_up_to_date: false,
                ..f.clone()
            }),
            Decision::Fetch(DueReason::TargetChanged)
        );
        assert_eq!(
            decide(&Facts {
                rejected_with_same_inputs: true,
                current: None,
                ..f.clone()
            }),
            Decision::HoldRejected
        );
        // A token that expired at once is not replaced before its own renewal time.
        assert_eq!(
            decide(&Facts {
                current: None,
                last_renewal: Some(at("2026-01-01T00:10:30Z")),
                ..f.clone()
            }),
            Decision::WaitUntil(at("2026-01-01T00:10:30Z"))
        );
        assert_eq!(
            decide(&Facts {
                current: None,
                last_renewal: Some(at("2026-01-01T00:10:30Z")),
                inputs_unchanged: false,
                ..f.clone()
            }),
            Decision::Fetch(DueReason::NoToken)
        );
        // …but the current token's own schedule (and a retry) is not delayed by it.
        assert_eq!(
            decide(&Facts {
                now: at("2026-01-01T00:40:00Z"),
                last_renewal: Some(at("2026-01-01T00:50:00Z")),
                ..f.clone()
            }),
            Decision::Fetch(DueReason::RenewalTime)
        );
        // Backoff delays scheduled work but not a changed input.
        let backing_off = Facts {
            now: at("2026-01-01T00:45:00Z"),
            retry_not_before: Some(at("2026-01-01T00:46:00Z")),
            ..f.clone()
        };
        assert_eq!(
            decide(&backing_off),
            Decision::WaitUntil(at("2026-01-01T00:46:00Z"))
        );
        assert_eq!(
            decide(&Facts {
                inputs_unchanged: false,
                ..backing_off.clone()
            }),
            Decision::Fetch(DueReason::InputsChanged)
        );
        // …once: changed inputs that already failed wait like everything else.
        assert_eq!(
            decide(&Facts {
                inputs_unchanged: false,
                inputs_failed_before: true,
                ..backing_off
            }),
            Decision::WaitUntil(at("2026-01-01T00:46:00Z"))
        );
    }

    #[test]
    fn grant_choice() {
        let base = GrantFacts {
            primary: GrantType::AuthorizationCode,
            supports_refresh: true,
            has_stored_refresh_token: false,
            has_new_seed: false,
            has_unspent_code: false,
        };
        assert_eq!(choose_grant(&base), GrantChoice::ReauthorizationRequired);
        assert_eq!(
            choose_grant(&GrantFacts {
                has_unspent_code: true,
                ..base
            }),
            GrantChoice::Primary
        );
        assert_eq!(
            choose_grant(&GrantFacts {
                has_stored_refresh_token: true,
                ..base
            }),
            GrantChoice::StoredRefreshToken
        );
        assert_eq!(
            choose_grant(&GrantFacts {
                has_new_seed: true,
                has_stored_refresh_token: true,
                ..base
            }),
            GrantChoice::SeedRefreshToken
        );
        let password = GrantFacts {
            primary: GrantType::Password,
            ..base
        };
        assert_eq!(choose_grant(&password), GrantChoice::Primary);
        assert_eq!(
            choose_grant(&GrantFacts {
                has_stored_refresh_token: true,
                ..password
            }),
            GrantChoice::StoredRefreshToken
        );
        let no_refresh = GrantFacts {
            supports_refresh: false,
            has_new_seed: true,
            ..password
        };
        assert_eq!(choose_grant(&no_refresh), GrantChoice::Primary);
    }
}
