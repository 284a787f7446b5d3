//! Command-line entry points.

pub mod authorize;
pub mod cluster;
pub mod completion;
pub mod crd;
pub mod fetch;
pub mod manifest;
pub mod private_file;
pub mod refresh;
pub mod run;
pub mod status;

/// Text that did not come from this program (a provider's words, a server's error) as it may
/// reach a terminal: control characters (C0, DEL, C1) could move the cursor, retitle the
/// window or rewrite what was printed, and bidirectional overrides reorder what is shown.
/// Whitespace controls become spaces; the rest are dropped.
pub fn terminal_safe(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            c if c.is_control() && c.is_whitespace() => Some(' '),
            c if c.is_control() => None,
            '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => None,
            c => Some(c),
        })
        .collect()
}

/// A ProviderCredential `name` in namespace `ns` with this status, as the commands read it.
#[cfg(test)]
fn fixture(name: &str, status: serde_json::Value) -> crate::api::ProviderCredential {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "ProviderCredential",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "tokenEndpoint": {"url": "https://example.test/token"},
            "credentials": {"secretRef": {"name": "c"}},
            "target": {"secretName": "t"}
        },
        "status": status
    }))
    .expect("a valid ProviderCredential")
}
