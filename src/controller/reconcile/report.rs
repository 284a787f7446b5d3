//! Turning outcomes into status: conditions, token tracking, failures, Events, and when to
//! look again. Writes the status only when it changed.

use super::*;

impl Run<'_> {
    /// Between rotations: leave a true Ready alone (an identical status is not written).
    pub(super) fn keep_ready(&mut self) {
        let generation = self.pc.meta().generation;
        let ready =
            conditions::get(&self.status.conditions, READY).is_some_and(|c| c.status == "True");
        if let Some(c) = self.current.clone().filter(|_| !ready) {
            let message = format!("token valid until {}", c.expires_at);
            conditions::set(
                &mut self.status.conditions,
                READY,
                true,
                reason::TOKEN_ISSUED,
                message,
                generation,
                self.now,
            );
        }
    }

    /// Ready while the last good token is valid (saying what is wrong), else not Ready for `why`.
    fn set_ready_despite(&mut self, why: &str, message: &str, while_valid: &str) {
        let generation = self.pc.meta().generation;
        let (ready, reason, text) = match &self.current {
            Some(c) => (
                true,
                reason::TOKEN_ISSUED,
                format!("token valid until {}; {while_valid}", c.expires_at),
            ),
            None => (false, why, message.to_string()),
        };
        conditions::set(
            &mut self.status.conditions,
            READY,
            ready,
            reason,
            text,
            generation,
            self.now,
        );
    }

    /// A state that needs a person (or a change) before any token request.
    pub(super) fn blocked(
        &mut self,
        why: &str,
        message: String,
        recheck: Option<Duration>,
    ) -> Next {
        let generation = self.pc.meta().generation;
        self.set_ready_despite(why, &message, &format!("no refresh possible: {message}"));
        let degraded = why != reason::SUSPENDED;
        conditions::set(
            &mut self.status.conditions,
            DEGRADED,
            degraded,
            why,
            message,
            generation,
            self.now,
        );
        self.status.next_refresh_at = None;
        let at_expiry = self.requeue_at_expiry_or_never();
        match recheck {
            Some(d) => shorter(at_expiry, d),
            None => at_expiry,
        }
    }

    pub(super) fn issued(
        &mut self,
        token: &IssuedToken,
        state_name: &str,
        policy: &RenewalPolicy,
    ) -> Next {
        let generation = self.pc.meta().generation;
        let fingerprint = token.fingerprint();
        let same_token = self
            .old
            .access_token
            .as_ref()
            .map(|a| a.fingerprint.as_str())
            == Some(fingerprint.as_str());
        let next = if same_token {
            // The provider hands out the same token until it expires: ask again then, not before.
            token.expires_at + jiff::SignedDuration::from_secs(1)
        } else {
            rotation::next_refresh_at(
                token.issued_at,
                token.expires_at,
                policy,
                jitter_for(&fingerprint),
            )
        };
        self.current = Some(ObservedToken {
            expires_at: token.expires_at,
            issued_at: token.issued_at,
            fingerprint: fingerprint.clone(),
        });
        let issued_at = if same_token {
            self.old
                .access_token
                .as_ref()
                .map(|a| a.issued_at.clone())
                .unwrap_or(Time(token.issued_at))
        } else {
            Time(token.issued_at)
        };
        self.status.access_token = Some(AccessTokenStatus {
            issued_at,
            expires_at: Time(token.expires_at),
            fingerprint,
            lifetime_source: token.lifetime_source.as_str().to_string(),
            secret_name: self.pc.spec.target.secret_name.clone(),
        });
        self.status.next_refresh_at = Some(Time(next));
        self.status.consecutive_failures = None;
        self.status.refresh_token = match (&token.refresh, self.status.refresh_token.take()) {
            (RefreshOutcome::NewlyIssued(t), _) => Some(self.refresh_status(t, 0)),
            (RefreshOutcome::Rotated(t), old) => {
                let rotations = old.map(|o| o.rotations + 1).unwrap_or(1);
                Some(self.refresh_status(t, rotations))
            }
            (RefreshOutcome::Kept, old) => old,
            (RefreshOutcome::None, _) => None,
        };
        if let Some(r) = self.status.refresh_token.as_mut() {
            r.secret_ref.name = state_name.to_string();
        }
        let message = format!(
            "token valid until {} (lifetime from {}, next refresh at {next})",
            token.expires_at,
            token.lifetime_source.as_str()
        );
        conditions::set(
            &mut self.status.conditions,
            READY,
            true,
            reason::TOKEN_ISSUED,
            message,
            generation,
            self.now,
        );
        conditions::set(
            &mut self.status.conditions,
            DEGRADED,
            false,
            reason::REFRESH_SUCCEEDED,
            "the last token request succeeded".into(),
            generation,
            self.now,
        );
        self.ctx
            .metrics
            .token_scheduled(self.pc, Some(token.expires_at), Some(next));
        self.requeue_at(next)
    }

    pub(super) fn refresh_status(
        &self,
        token: &SecretString,
        rotations: u64,
    ) -> RefreshTokenStatus {
        use secrecy::ExposeSecret;
        RefreshTokenStatus {
            secret_ref: SecretKeyRef {
                name: state_secret_name(&self.pc.name_any()),
                key: state::REFRESH_TOKEN_KEY.into(),
            },
            issued_at: Time(self.now),
            fingerprint: crate::provider::fingerprint(token.expose_secret()),
            rotations,
        }
    }

    pub(super) fn failed(
        &mut self,
        error: &FetchError,
        chain_ended: ChainEnd,
        config: &ProviderConfig,
    ) -> Next {
        let generation = self.pc.meta().generation;
        let class = error.class();
        let failures = self.status.consecutive_failures.unwrap_or(0) + 1;
        self.status.consecutive_failures = Some(failures);
        self.status.last_failure = Some(FailureStatus {
            time: Time(self.now),
            reason: class.reason().into(),
            http_status: error.http_status(),
            message: error.to_string(),
        });
        warn!(reason = class.reason(), error = %error, "token request failed");
        let (why, message, retry) = match chain_ended {
            ChainEnd::FallBackToPrimary => (
                class.reason(),
                format!(
                    "the refresh token was rejected ({error}); requesting a new token with the {} grant",
                    config.grant.wire_value()
                ),
                Some(Duration::ZERO),
            ),
            ChainEnd::NeedsReauthorization => (
                reason::REAUTHORIZATION_REQUIRED,
                format!(
                    "the provider ended the refresh chain ({error}); obtain a new authorization code and put it in the credentials Secret"
                ),
                None,
            ),
            ChainEnd::No if class.is_transient() => {
                let delay = rotation::backoff(failures, error.retry_after(), rand::random());
                (class.reason(), error.to_string(), Some(delay))
            }
            ChainEnd::No => (
                class.reason(),
                format!("{error}; not retried until the credentials or the spec change"),
                None,
            ),
        };
        self.set_ready_despite(why, &message, &format!("refreshing it is failing ({why})"));
        conditions::set(
            &mut self.status.conditions,
            DEGRADED,
            true,
            why,
            message,
            generation,
            self.now,
        );
        self.ctx.metrics.reconcile_failure(class.reason());
        match retry {
            Some(delay) => {
                let at = self.now + jiff::SignedDuration::try_from(delay).unwrap_or_default();
                self.status.next_refresh_at = Some(Time(at));
                shorter(self.requeue_at_expiry_or_never(), delay)
            }
            None => {
                self.status.next_refresh_at = None;
                self.requeue_at_expiry_or_never()
            }
        }
    }

    pub(super) fn requeue_at(&self, at: Timestamp) -> Next {
        let wait = at.duration_since(self.now).as_secs_f64().max(0.0);
        Some(Duration::from_secs_f64(wait).max(rotation::MIN_INTERVAL))
    }

    /// Look again when the current token expires (to report it), or wait for a change.
    pub(super) fn requeue_at_expiry_or_never(&self) -> Next {
        self.current
            .as_ref()
            .and_then(|c| self.requeue_at(c.expires_at))
    }

    /// Writes the status if it changed and publishes Events for condition transitions.
    pub(super) async fn finish(self) -> Result<(), ReconcileError> {
        self.ctx.metrics.token_scheduled(
            self.pc,
            self.current.as_ref().map(|c| c.expires_at),
            self.status.next_refresh_at.as_ref().map(|t| t.0),
        );
        if self.status == self.old {
            return Ok(());
        }
        let api: Api<ProviderCredential> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pc.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            // A precondition: a reconcile working from a stale copy must not overwrite a
            // newer status.
            "metadata": {"resourceVersion": self.pc.meta().resource_version},
            "status": self.status,
        });
        api.patch_status(
            &self.pc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref s) if s.code == 409 => ReconcileError::StaleObject,
            e => ReconcileError::Status(e),
        })?;
        debug!(
            old = %serde_json::to_string(&self.old).unwrap_or_default(),
            new = %serde_json::to_string(&self.status).unwrap_or_default(),
            "status written"
        );
        for type_ in [READY, DEGRADED] {
            if !conditions::transitioned(&self.old.conditions, &self.status.conditions, type_) {
                continue;
            }
            let Some(c) = conditions::get(&self.status.conditions, type_) else {
                continue;
            };
            let healthy = (type_ == READY) == (c.status == "True");
            // Degraded=False right after creation is no news.
            if type_ == DEGRADED
                && healthy
                && conditions::get(&self.old.conditions, DEGRADED).is_none()
            {
                continue;
            }
            let event = Event {
                type_: if healthy {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: c.reason.clone(),
                note: Some(crate::provider::scrub::truncate_chars(&c.message, 1000)),
                action: if type_ == READY {
                    "Rotate".into()
                } else {
                    "Refresh".into()
                },
                secondary: None,
            };
            if let Err(e) = self
                .ctx
                .recorder
                .publish(&event, &self.pc.object_ref(&()))
                .await
            {
                warn!(error = %e, "cannot publish an Event");
            }
        }
        Ok(())
    }
}

/// Jitter for one rotation, derived from the token's fingerprint: drawn once per token, the
/// same in every reconcile and after a restart, different across tokens.
pub(super) fn jitter_for(fingerprint: &str) -> f64 {
    let hex = fingerprint.trim_start_matches("sha256:");
    let bits = u32::from_str_radix(hex.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    f64::from(bits) / f64::from(u32::MAX)
}

/// The sooner of two looks.
pub(super) fn shorter(next: Next, delay: Duration) -> Next {
    let delay = delay.max(rotation::MIN_INTERVAL);
    Some(next.map_or(delay, |d| d.min(delay)))
}
