//! The token dialect: build one request, send it, understand the answer. No Kubernetes here.

pub mod address;
pub mod assertion;
pub mod config;
pub mod credentials;
pub mod error;
pub mod http;
mod jose;
pub mod lifetime;
pub mod presets;
pub mod request;
pub mod response;
pub mod scrub;

pub use config::{
    BodyEncoding, ClientAuthentication, GrantType, Limits, Param, ProviderConfig, ResponseMapping,
};
pub use credentials::Credentials;
pub use error::{ErrorClass, FetchError};
pub use http::{HttpPolicy, TokenClient};
pub use lifetime::LifetimeSource;
pub use presets::{DialectDefaults, Preset, WorkloadIdentity};
pub use request::{GrantRequest, PreparedRequest, build_request};
pub use response::{
    IssuedToken, MAX_TOKEN_BYTES, MAX_TOKEN_TYPE_BYTES, RefreshOutcome, fingerprint,
};
