//! Removes every credential that was sent from text the provider sent back, and keeps
//! excerpts short and on one line so they fit a condition message.

use base64::Engine;

const REDACTED: &str = "[REDACTED]";
/// Shorter secrets would match ordinary words; text containing one is withheld entirely.
const MIN_REPLACEABLE: usize = 4;
pub const MAX_EXCERPT_CHARS: usize = 200;

pub struct Scrubber<'a> {
    secrets: Vec<&'a str>,
}

impl<'a> Scrubber<'a> {
    pub fn new(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Scrubber {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// The text with each secret (raw, form-encoded, JSON-escaped, base64) replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            for form in variants(secret) {
                if form.is_empty() || !out.contains(form.as_str()) {
                    continue;
                }
                if form.chars().count() < MIN_REPLACEABLE {
                    return "[provider message withheld: it may contain a credential]".into();
                }
                out = out.replace(form.as_str(), REDACTED);
            }
        }
        out
    }

    /// A one-line, bounded, scrubbed excerpt.
    pub fn excerpt(&self, text: &str) -> String {
        // Scrub before truncating, so a secret cut in half cannot survive.
        let scrubbed = self.scrub(text);
        let collapsed = scrubbed.split_whitespace().collect::<Vec<_>>().join(" ");
        truncate_chars(&collapsed, MAX_EXCERPT_CHARS)
    }
}

fn variants(secret: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json_inner = json.trim_matches('"').to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let mut all = vec![secret.to_string(), form, json_inner, b64];
    all.sort();
    all.dedup();
    // Longest first, so a secret containing another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all
}

pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_raw_and_encoded_forms() {
        let s = Scrubber::new(["p@ss w0rd!"]);
        let text = "bad password p@ss w0rd! (p%40ss+w0rd%21) cEBzcyB3MHJkIQ==";
        let out = s.scrub(text);
        assert!(!out.contains("p@ss"), "{out}");
        assert!(!out.contains("p%40ss"), "{out}");
        assert!(!out.contains("cEBzcyB3MHJkIQ=="), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3);
    }

    #[test]
    fn withholds_text_containing_a_short_secret() {
        let s = Scrubber::new(["ab"]);
        assert!(!s.scrub("user ab is locked").contains("ab is"));
        assert_eq!(s.scrub("nothing here"), "nothing here");
    }

    #[test]
    fn excerpt_is_one_bounded_line() {
        let s = Scrubber::new(Vec::<&str>::new());
        let long = "word\n".repeat(500);
        let e = s.excerpt(&long);
        assert!(!e.contains('\n'));
        assert!(e.chars().count() <= MAX_EXCERPT_CHARS + 1);
    }
}
