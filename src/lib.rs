//! token-rotator: keeps short-lived API tokens fresh inside Kubernetes Secrets.
