//! One router for everything: each provider under its own path prefix, the standards OAuth 2.0
//! server under `/oauth2`, admin under `/_emulator`.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post};

use crate::control::Control;
use crate::pipeline::token_endpoint;
use crate::provider::Provider;
use crate::state::Shared;
use crate::whoami::whoami;
use crate::{admin, oauth2};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut app = Router::new();
    for p in Provider::ALL {
        let (s1, s2) = (shared.clone(), shared.clone());
        app = app
            .route(
                p.token_path(),
                post(move |req: Request| token_endpoint(p, s1.clone(), req)),
            )
            .route(
                &p.whoami_path(),
                get(move |headers: HeaderMap, uri: Uri| whoami(p, s2.clone(), headers, uri)),
            );
    }
    let s3 = shared.clone();
    app = app.route(
        Provider::Retently
            .authorize_path()
            .expect("Retently has an authorization endpoint"),
        get(move |uri: Uri| async move {
            let now = jiff::Timestamp::now();
            crate::providers::retently::authorize(
                &mut s3.lock(),
                uri.query().unwrap_or_default(),
                now,
            )
        }),
    );
    let (s4, s5) = (shared.clone(), shared.clone());
    app = app
        .route(
            oauth2::TOKEN_PATH,
            post(move |req: Request| oauth2::token_endpoint(s4.clone(), req)),
        )
        .route(
            oauth2::WHOAMI_PATH,
            get(move |req: Request| oauth2::whoami(s5.clone(), req)),
        );
    app.nest("/_emulator", admin::router(Control::new(shared)))
}
