//! Strings kept for every resource, packed into one allocation: each part a 4-byte length
//! and its bytes (a missing one as `u32::MAX`), where a struct of `String`s would take an
//! allocation per part plus its own. Used for the kept credentials and the remembered targets.

use jiff::Timestamp;

use crate::rotation::TargetView;
use crate::target::ObservedTarget;

/// The length that marks a missing part.
const MISSING: u32 = u32::MAX;

/// Appends a part; `None` for one too long for its length prefix (never one of a Secret).
pub fn put(packed: &mut Vec<u8>, part: Option<&[u8]>) -> Option<()> {
    let len = match part {
        Some(bytes) => u32::try_from(bytes.len()).ok().filter(|&n| n != MISSING)?,
        None => MISSING,
    };
    packed.extend_from_slice(&len.to_le_bytes());
    packed.extend_from_slice(part.unwrap_or_default());
    Some(())
}

/// The next part (`Some(None)`: a missing one); `None` at the end.
pub fn take<'a>(rest: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len);
    if len == MISSING {
        *rest = tail;
        return Some(None);
    }
    let (part, tail) = tail.split_at_checked(len as usize)?;
    *rest = tail;
    Some(Some(part))
}

/// A target Secret as last seen, packed: about half the memory of a [`TargetView`] (its six
/// strings are two digests, a fingerprint and a keyed inputs digest, ~250 bytes together).
pub struct PackedTarget {
    strings: Box<[u8]>,
    expires_at: Option<Timestamp>,
    issued_at: Option<Timestamp>,
}

impl PackedTarget {
    /// `None` for a part too long to pack (then nothing is remembered: the target is read).
    pub fn of(view: &TargetView) -> Option<Self> {
        let t = &view.token;
        let parts = [
            &view.resource_version,
            &view.secret_type,
            &t.fingerprint,
            &t.settings,
            &t.refresh_handled,
            &t.inputs,
        ];
        let size = parts
            .iter()
            .map(|p| 4 + p.as_ref().map_or(0, |s| s.len()))
            .sum();
        let mut strings = Vec::with_capacity(size);
        for part in parts {
            put(&mut strings, part.as_deref().map(str::as_bytes))?;
        }
        Some(Self {
            strings: strings.into_boxed_slice(),
            expires_at: t.expires_at,
            issued_at: t.issued_at,
        })
    }

    pub fn view(&self) -> TargetView {
        let mut rest: &[u8] = &self.strings;
        // Packed from strings: they are UTF-8.
        let mut next = || {
            take(&mut rest)
                .flatten()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let (resource_version, secret_type) = (next(), next());
        let (fingerprint, settings, refresh_handled, inputs) = (next(), next(), next(), next());
        TargetView {
            resource_version,
            secret_type,
            token: ObservedTarget {
                fingerprint,
                expires_at: self.expires_at,
                issued_at: self.issued_at,
                settings,
                refresh_handled,
                inputs,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_target_comes_back_as_it_was_given() {
        let printable: String = (' '..='~').collect();
        let full = TargetView {
            resource_version: Some("123".into()),
            secret_type: Some("Opaque".into()),
            token: ObservedTarget {
                fingerprint: Some(printable.clone()),
                expires_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
                issued_at: Some(Timestamp::from_second(1_700_000_000).unwrap()),
                settings: Some(String::new()),
                refresh_handled: Some("\u{e9}\u{0}x".into()),
                inputs: Some("k1:".to_string() + &"ab".repeat(32)),
            },
        };
        let empty = TargetView {
            resource_version: None,
            secret_type: None,
            token: ObservedTarget {
                fingerprint: None,
                expires_at: None,
                issued_at: None,
                settings: None,
                refresh_handled: None,
                inputs: None,
            },
        };
        for view in [full, empty] {
            let back = PackedTarget::of(&view).expect("fits").view();
            assert_eq!(format!("{back:?}"), format!("{view:?}"));
        }
    }

    #[test]
    fn parts_keep_missing_apart_from_empty_and_stop_at_a_short_buffer() {
        let mut packed = Vec::new();
        put(&mut packed, Some(b"")).unwrap();
        put(&mut packed, None).unwrap();
        put(&mut packed, Some(b"abc")).unwrap();
        let mut rest: &[u8] = &packed;
        assert_eq!(take(&mut rest), Some(Some(&b""[..])));
        assert_eq!(take(&mut rest), Some(None));
        assert_eq!(take(&mut rest), Some(Some(&b"abc"[..])));
        assert_eq!(take(&mut rest), None);
        // A length that runs past the end is the end, never a panic.
        let mut short: &[u8] = &[5, 0, 0, 0, b'a'];
        assert_eq!(take(&mut short), None);
    }
}
