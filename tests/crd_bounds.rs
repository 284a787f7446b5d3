//! What one resource can cost the operator at most: a ProviderCredential and a
//! TokenDeliveryGrant with every field at its bound (the CRD admits nothing larger), measured
//! as the heap the deserialized object holds. docs/scale.md quotes these figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kube::CustomResourceExt;
use serde_json::{Value, json};
use token_rotator::api::{ProviderCredential, TokenDeliveryGrant, limits};

/// Counts the bytes each thread holds, so that tests running beside it do not blur it.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = HELD.try_with(|h| h.set(h.get() + delta));
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> isize {
    HELD.with(Cell::get)
}

fn schema(crd: impl serde::Serialize) -> Value {
    let crd = serde_json::to_value(crd).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// A value of `node` with every string, list and map at its bound.
fn maximal(node: &Value) -> Value {
    filled(node, Fill::Maximal)
}

#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// Every string at its maxLength, every map key 317 characters.
    Maximal,
    /// Every list and map full of the smallest entries: one-character strings and keys, where
    /// a JSON-byte count would most underestimate memory.
    Tiny,
}

fn filled(node: &Value, fill: Fill) -> Value {
    let bound = |key: &str| {
        node[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}: {node}")) as usize
    };
    match node["type"].as_str() {
        Some("string") => {
            if let Some(values) = node["enum"].as_array() {
                values
                    .iter()
                    .max_by_key(|v| v.as_str().map_or(0, str::len))
                    .cloned()
                    .unwrap()
            } else if node["format"] == "date-time" {
                json!("2006-01-02T15:04:05Z")
            } else if fill == Fill::Tiny {
                json!("a")
            } else {
                json!("a".repeat(bound("maxLength")))
            }
        }
        Some("integer") | Some("number") => json!(node["maximum"].as_f64().unwrap_or(1.0) as u64),
        Some("boolean") => json!(true),
        Some("array") => vec![filled(&node["items"], fill); bound("maxItems")].into(),
        Some("object") if node["additionalProperties"].is_object() => {
            let value = filled(&node["additionalProperties"], fill);
            let key = match fill {
                Fill::Maximal => limits::MAP_KEY as usize,
                Fill::Tiny => 1,
            };
            (0..bound("maxProperties"))
                .map(|i| (format!("{i:0>key$}"), value.clone()))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        Some("object") => node["properties"]
            .as_object()
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.clone(), filled(v, fill)))
                    .collect()
            })
            .unwrap_or_default(),
        other => panic!("type {other:?}"),
    }
}

/// The metadata the operator's cache keeps of a resource, each part at its bound.
fn metadata(name_len: usize) -> Value {
    json!({
        "name": "n".repeat(name_len),
        "namespace": "s".repeat(63),
        "uid": "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0f",
        "resourceVersion": "123456789012",
        "generation": 1,
        "finalizers": ["tokenrotator.dev/delivered-copies"],
        "annotations": {"tokenrotator.dev/refresh": "r".repeat(limits::REFRESH_REQUEST as usize)},
    })
}

/// The heap `text` holds once deserialized as `T`, and `T` itself.
fn measure<T: serde::de::DeserializeOwned>(text: &str) -> (T, isize) {
    let before = held();
    let object: T = serde_json::from_str(text).unwrap();
    (object, held() - before)
}

#[test]
fn a_provider_credential_at_every_bound_costs_at_most_the_documented_bytes() {
    let schema = schema(ProviderCredential::crd());
    let mut object = json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "ProviderCredential",
        "metadata": metadata(239),
        "spec": maximal(&schema["properties"]["spec"]),
    });
    let text = object.to_string();
    let (pc, bytes) = measure::<ProviderCredential>(&text);
    eprintln!(
        "ProviderCredential at every bound: {} bytes of JSON, {bytes} bytes held",
        text.len()
    );
    limits::check_resource(&pc).expect("within every bound");
    // The documented worst case (docs/scale.md): 1.0 MiB held, spec and kept metadata.
    assert!(bytes < 1024 * 1024, "{bytes} bytes");
    assert!(
        bytes > 700 * 1024,
        "{bytes} bytes: not every field at its bound?"
    );

    // One character more anywhere is refused: here the largest field.
    object["spec"]["tokenEndpoint"]["caBundle"] = json!("a".repeat(65537));
    let pc: ProviderCredential = serde_json::from_value(object).unwrap();
    assert!(limits::check_resource(&pc).is_err());
}

#[test]
fn a_token_delivery_grant_at_every_bound_costs_at_most_the_documented_bytes() {
    let schema = schema(TokenDeliveryGrant::crd());
    let object = json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "TokenDeliveryGrant",
        "metadata": metadata(253),
        "spec": maximal(&schema["properties"]["spec"]),
    });
    let text = object.to_string();
    let (_grant, bytes) = measure::<TokenDeliveryGrant>(&text);
    eprintln!(
        "TokenDeliveryGrant at every bound: {} bytes of JSON, {bytes} bytes held",
        text.len()
    );
    // The documented worst case (docs/scale.md): 32 KiB held.
    assert!(bytes < 32 * 1024, "{bytes} bytes");
}

/// The per-namespace cache budget charges a resource at least what it holds in memory, for
/// the largest one and for one full of the smallest entries (lists of one-character strings:
/// a count of JSON bytes would charge a fraction of their memory).
#[test]
fn the_cache_budget_charges_at_least_what_a_resource_holds() {
    let schema = schema(ProviderCredential::crd());
    for (fill, what) in [
        (Fill::Maximal, "at every bound"),
        (Fill::Tiny, "full of tiny entries"),
    ] {
        let object = json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": metadata(63),
            "spec": filled(&schema["properties"]["spec"], fill),
            "status": filled(&schema["properties"]["status"], fill),
        });
        let text = object.to_string();
        let (guard, held) = measure::<token_rotator::api::Guarded>(&text);
        // The object itself lives on the heap too, in the cache's shared pointer.
        let held = held + std::mem::size_of::<token_rotator::api::Guarded>() as isize;
        assert!(guard.0.is_ok(), "{what}: parses");
        let charged = token_rotator::controller::cache_charge(&guard);
        eprintln!(
            "ProviderCredential {what}: {} bytes of JSON, {held} bytes held, {charged} charged",
            text.len()
        );
        assert!(
            charged as isize >= held,
            "{what}: charged {charged} < held {held}"
        );
    }
    // An ordinary resource, as the scale benchmark's: what the default budget holds.
    let ordinary = json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "ProviderCredential",
        "metadata": {"name": "pc-1234", "namespace": "bench-1-abcdef", "uid": "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0f", "resourceVersion": "123456", "generation": 1},
        "spec": {"preset": "rently", "tokenEndpoint": {"url": "https://api.rently.example/oauth/token"},
                 "credentials": {"secretRef": {"name": "rently-creds-1234"}}, "target": {"secretName": "token-1234"}},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "TokenIssued", "message": "token issued; it expires at 2026-12-07T03:00:00Z and is renewed from 2026-12-07T02:48:00Z", "lastTransitionTime": "2026-12-07T02:00:00Z", "observedGeneration": 1},
                {"type": "Degraded", "status": "False", "reason": "TokenIssued", "message": "", "lastTransitionTime": "2026-12-07T02:00:00Z", "observedGeneration": 1}
            ],
            "observedGeneration": 1, "expiresAt": "2026-12-07T03:00:00Z", "lastRotated": "2026-12-07T02:00:00Z",
            "nextRotation": "2026-12-07T02:48:00Z", "tokenFingerprint": "sha256:0123456789abcdef0123456789abcdef"
        }
    });
    let text = ordinary.to_string();
    let (guard, held) = measure::<token_rotator::api::Guarded>(&text);
    let held = held + std::mem::size_of::<token_rotator::api::Guarded>() as isize;
    let charged = token_rotator::controller::cache_charge(&guard);
    eprintln!(
        "an ordinary ProviderCredential: {} bytes of JSON, {held} bytes held, {charged} charged",
        text.len()
    );
    assert!(charged as isize >= held);
    // The default budget (32 MiB) holds a namespace of 8,000 ordinary resources.
    assert!(8_000 * charged < 32 << 20, "{charged} bytes charged each");
}
