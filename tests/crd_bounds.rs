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
            } else {
                json!("a".repeat(bound("maxLength")))
            }
        }
        Some("integer") | Some("number") => json!(node["maximum"].as_f64().unwrap_or(1.0) as u64),
        Some("boolean") => json!(true),
        Some("array") => vec![maximal(&node["items"]); bound("maxItems")].into(),
        Some("object") if node["additionalProperties"].is_object() => {
            let value = maximal(&node["additionalProperties"]);
            let key = limits::MAP_KEY as usize;
            (0..bound("maxProperties"))
                .map(|i| (format!("{i:0>key$}"), value.clone()))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        Some("object") => node["properties"]
            .as_object()
            .map(|p| p.iter().map(|(k, v)| (k.clone(), maximal(v))).collect())
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
