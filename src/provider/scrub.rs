//! Removes every credential that was sent from text the provider sent back, and keeps
//! excerpts short and on one line so they fit a condition message.

use base64::Engine;

const REDACTED: &str = "[REDACTED]";
const WITHHELD: &str = "[provider message withheld: it may contain a credential]";
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

    /// The text with each secret replaced, in whatever escaping the provider used: replaced
    /// in the text as it came (raw, form-encoded, JSON-escaped, base64 in four forms), then
    /// again after decoding JSON escapes (`\/`, `\uXXXX`, …) and percent-encoding (either
    /// case), repeatedly, so an echo in any of those forms or their combinations is caught.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = self.replace_variants(text);
        for _ in 0..MAX_DECODE_ROUNDS {
            let decoded = decode_escapes(&out);
            if decoded == out {
                return out;
            }
            out = self.replace_variants(&decoded);
        }
        // Still decoding after this many rounds: too deep to be sure, so withheld.
        WITHHELD.into()
    }

    fn replace_variants(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest first across every secret, so one secret's [REDACTED] cannot cut another
        // that contains it.
        let mut forms: Vec<String> = self.secrets.iter().flat_map(|s| variants(s)).collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        for form in forms {
            if form.is_empty() || !out.contains(form.as_str()) {
                continue;
            }
            if form.chars().count() < MIN_REPLACEABLE {
                return WITHHELD.into();
            }
            out = out.replace(form.as_str(), REDACTED);
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

/// Escapes nested deeper than this are withheld rather than decoded further.
const MAX_DECODE_ROUNDS: usize = 4;

fn variants(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json_inner = json.trim_matches('"').to_string();
    let mut all = vec![secret.to_string(), form, json_inner];
    all.extend(
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].map(|engine| engine.encode(secret)),
    );
    all.sort();
    all.dedup();
    // Longest first, so a secret containing another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all
}

/// One round of decoding: JSON string escapes, then percent-encoding.
fn decode_escapes(text: &str) -> String {
    let unescaped = json_unescape(text);
    percent_encoding::percent_decode_str(&unescaped)
        .decode_utf8_lossy()
        .into_owned()
}

/// JSON string escapes (RFC 8259 §7) wherever they appear; anything else is left as it is.
fn json_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(e @ ('"' | '\\' | '/')) => {
                chars.next();
                out.push(e);
            }
            Some('n' | 't' | 'r' | 'b' | 'f') => {
                chars.next();
                out.push(' ');
            }
            Some('u') => {
                let hex: String = chars.clone().skip(1).take(4).collect();
                match u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                {
                    Some(code) => {
                        chars.nth(4);
                        // A surrogate half on its own cannot be shown; it decodes to U+FFFD.
                        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    None => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
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
    fn replaces_echoes_in_any_escaping() {
        let secret = "a/b+c=d%e\"f\\g h";
        let s = Scrubber::new([secret]);
        let escaped_slash = serde_json::to_string(secret).unwrap().replace('/', "\\/");
        let unicode: String = secret
            .chars()
            .map(|c| format!("\\u{:04X}", c as u32))
            .collect();
        let lower_percent: String = secret.bytes().map(|b| format!("%{b:02x}")).collect();
        let upper_percent: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
        let url_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        for echo in [
            escaped_slash,
            unicode,
            lower_percent,
            upper_percent,
            url_b64,
        ] {
            let out = s.scrub(&format!("rejected: {echo} (end)"));
            assert!(
                !out.contains("d%e") && !out.contains("c=d"),
                "{echo} → {out}"
            );
            assert!(
                out.contains(REDACTED) && out.ends_with("(end)"),
                "{echo} → {out}"
            );
        }
    }

    #[test]
    fn an_echo_escaped_too_deeply_is_withheld() {
        let s = Scrubber::new(["p@ssw0rd"]);
        let mut echo = "p@ssw0rd".to_string();
        for _ in 0..6 {
            echo = echo.bytes().map(|b| format!("%{b:02X}")).collect();
        }
        assert_eq!(s.scrub(&echo), WITHHELD);
        assert_eq!(s.scrub("100% fine"), "100% fine");
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
