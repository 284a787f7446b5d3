//! Refresh grants in flight, per chain, for the `overlapping_refreshes` counter: a client
//! that refreshes one chain from two places at once is racing itself, which a rotating
//! provider punishes with a broken chain.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::chains::ChainId;
use crate::provider::Provider;
use crate::providers;
use crate::state::{Inner, Shared};
use crate::wire::Form;

/// Marks one refresh grant in flight until dropped: answered, failed, or abandoned with
/// its connection (hyper drops the handler's future when the client goes away).
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    provider: Provider,
    chain: ChainId,
}

impl InFlight {
    /// At arrival, under the admission lock: when `body` is a refresh grant presenting a
    /// known token (live or replaced), marks its chain in flight and counts an overlap if
    /// the chain was in flight already. Faulted and throttled requests are marked too: the
    /// counter measures what the client sends, not what the emulator answers.
    pub fn enter(
        shared: &Arc<Shared>,
        inner: &mut Inner,
        p: Provider,
        body: &[u8],
    ) -> Option<InFlight> {
        let token = refresh_token(body)?;
        let chain = providers::chain_of(p, inner, &token)?;
        let state = inner.provider_mut(p);
        let n = state.in_flight.entry(chain).or_insert(0);
        if *n > 0 {
            state.counters.overlapping_refreshes += 1;
        }
        *n += 1;
        Some(InFlight {
            shared: shared.clone(),
            provider: p,
            chain,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        // Absent after a reset: nothing left to unmark.
        if let Entry::Occupied(mut e) = inner
            .provider_mut(self.provider)
            .in_flight
            .entry(self.chain)
        {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// The presented token when `body` is a `refresh_token` grant form. Read leniently (no
/// content-type check): the dialect judges the request, this only identifies the chain.
fn refresh_token(body: &[u8]) -> Option<String> {
    let form = Form::parse(body).ok()?;
    (form.get("grant_type")? == "refresh_token")
        .then(|| form.get("refresh_token").map(str::to_owned))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refresh_grants_name_a_token() {
        assert_eq!(
            refresh_token(b"grant_type=refresh_token&refresh_token=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            refresh_token(b"grant_type=password&refresh_token=abc"),
            None
        );
        assert_eq!(refresh_token(b"grant_type=refresh_token"), None);
        assert_eq!(refresh_token(b"{\"grant_type\":\"refresh_token\"}"), None);
    }
}
