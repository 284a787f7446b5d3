//! An in-process fake of the Kubernetes API server, for the protocol scenarios in
//! `protocol_tests.rs`. The steps talk to Kubernetes only through kube's `Client`, which is a
//! tower `Service` of HTTP requests: this is that service, so the steps run unchanged (they
//! keep using `kube::Api`). It keeps objects in memory by resource, namespace and name, answers
//! get, list (label and `metadata.name` field selectors, metadata-only lists), create, update,
//! merge and apply patches and delete with the API server's preconditions (resourceVersion and
//! UID: 409; absent: 404; a Secret's type is immutable: 422), records every request in order,
//! and fails the requests a test names with the status it names.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Create,
    Update,
    Patch,
    Delete,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Call {
    pub verb: Verb,
    /// The resource's plural: `secrets`, `providercredentials`, `events`.
    pub plural: String,
    pub namespace: Option<String>,
    /// The object's name; for a create, the name in the body.
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub query: String,
    pub body: Option<Value>,
}

impl Call {
    /// Whether this is `verb` on the object `plural` `namespace`/`name` itself.
    pub fn is(&self, verb: Verb, plural: &str, namespace: &str, name: &str) -> bool {
        self.verb == verb
            && self.plural == plural
            && self.namespace.as_deref() == Some(namespace)
            && self.name.as_deref() == Some(name)
            && self.subresource.is_none()
    }

    pub fn writes(&self) -> bool {
        !matches!(self.verb, Verb::Get | Verb::List)
    }
}

/// A failure a test injects: every request matching it gets this status instead.
struct Fault {
    /// `None`: in any namespace.
    namespace: Option<String>,
    verb: Verb,
    plural: String,
    name: String,
    code: u16,
    reason: String,
}

/// What a watch would show after a write: an object as it is now, or as it was when it went.
pub enum Change {
    Applied(Value),
    Deleted(Value),
}

/// Told of every change, by resource plural, as a watch with no lag would.
type Watcher = Arc<dyn Fn(&str, &Change) + Send + Sync>;

/// A concurrent writer: changes the stored object just before a matching request is
/// answered, once.
struct Race {
    verb: Verb,
    plural: String,
    name: String,
    change: Box<dyn FnOnce(&mut Value) + Send>,
}

#[derive(Default)]
struct Server {
    races: Vec<Race>,
    objects: BTreeMap<(String, String, String), Value>,
    last_version: u64,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    watchers: Vec<Watcher>,
    /// Changes made by the request being answered, for the watchers.
    changes: Vec<(String, Change)>,
}

#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<Server>>);

impl FakeApi {
    /// A kube `Client` whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.serve(request).await) }
        });
        kube::Client::new(service, "default")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Server> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `watcher` with every later change (seeds included), as soon as it is made.
    pub fn watch(&self, watcher: impl Fn(&str, &Change) + Send + Sync + 'static) {
        self.lock().watchers.push(Arc::new(watcher));
    }

    /// Tells the watchers what the last request changed (outside the lock: they may call in).
    fn notify(&self) {
        let (watchers, changes) = {
            let mut server = self.lock();
            (server.watchers.clone(), std::mem::take(&mut server.changes))
        };
        for (plural, change) in &changes {
            for watcher in &watchers {
                watcher(plural, change);
            }
        }
    }

    /// Stores `object` as a create by someone else would (a UID and a resourceVersion
    /// assigned, nothing recorded) and returns it as stored.
    pub fn seed<K: kube::Resource + Serialize + DeserializeOwned>(
        &self,
        plural: &str,
        object: &K,
    ) -> K {
        let mut value = serde_json::to_value(object).expect("a Kubernetes object serialises");
        {
            let mut server = self.lock();
            server.stamp_new(&mut value);
            let (namespace, name) = (meta_str(&value, "namespace"), meta_str(&value, "name"));
            server
                .objects
                .insert((plural.into(), namespace, name), value.clone());
            server
                .changes
                .push((plural.into(), Change::Applied(value.clone())));
        }
        self.notify();
        serde_json::from_value(value).expect("a stored object reads back")
    }

    /// Changes a stored object as someone else would (a new resourceVersion, nothing
    /// recorded).
    pub fn edit(&self, plural: &str, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
        {
            let mut server = self.lock();
            let key = (plural.to_string(), namespace.to_string(), name.to_string());
            let mut object = server
                .objects
                .get(&key)
                .cloned()
                .expect("the object exists");
            change(&mut object);
            server.bump(&mut object);
            server.store(key, &object);
        }
        self.notify();
    }

    /// The object as stored now.
    pub fn get<K: DeserializeOwned>(&self, plural: &str, namespace: &str, name: &str) -> Option<K> {
        let server = self.lock();
        let value = server
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))?;
        Some(serde_json::from_value(value.clone()).expect("a stored object reads back"))
    }

    pub fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<k8s_openapi::api::core::v1::Secret> {
        self.get("secrets", namespace, name)
    }

    /// Every later `verb` on `plural` named `name` (the object, not a subresource) fails with
    /// `code` and `reason`.
    pub fn fail(&self, verb: Verb, plural: &str, name: &str, code: u16, reason: &str) {
        self.lock().faults.push(Fault {
            namespace: None,
            verb,
            plural: plural.into(),
            name: name.into(),
            code,
            reason: reason.into(),
        });
    }

    /// As [`FakeApi::fail`], only in `namespace`, with the API server's reason for `code`.
    pub fn fail_in(&self, namespace: &str, verb: Verb, plural: &str, name: &str, code: u16) {
        let reason = match code {
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            422 => "Invalid",
            _ => "InternalError",
        };
        self.fail(verb, plural, name, code, reason);
        if let Some(fault) = self.lock().faults.last_mut() {
            fault.namespace = Some(namespace.into());
        }
    }

    /// The next `verb` on `plural` named `name` finds the object changed by `change` (as by
    /// another writer that got there first, between the operator's read and its write).
    pub fn race(
        &self,
        verb: Verb,
        plural: &str,
        name: &str,
        change: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.lock().races.push(Race {
            verb,
            plural: plural.into(),
            name: name.into(),
            change: Box::new(change),
        });
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The requests that write (all but get and list), in order; Events left out.
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.writes() && c.plural != "events")
            .collect()
    }

    /// Where the first write matching `verb`, `plural`, `namespace`/`name` is in [`writes`].
    pub fn write_index(
        &self,
        verb: Verb,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<usize> {
        self.writes()
            .iter()
            .position(|c| c.is(verb, plural, namespace, name))
    }

    /// How many requests matched.
    pub fn count(&self, verb: Verb, plural: &str, namespace: &str, name: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.is(verb, plural, namespace, name))
            .count()
    }

    pub fn forget_calls(&self) {
        self.lock().calls.clear();
    }

    async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let Some(call) = parse(&parts.method, parts.uri.path(), parts.uri.query(), body) else {
            return status(404, "NotFound", "no such path in the fake");
        };
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|a| a.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let response = {
            let mut server = self.lock();
            server.calls.push(call.clone());
            server.run_race(&call);
            match server.faults.iter().find(|f| {
                f.verb == call.verb
                    && f.plural == call.plural
                    && call.name.as_deref() == Some(&f.name)
                    && call.subresource.is_none()
                    && f.namespace
                        .as_ref()
                        .is_none_or(|ns| call.namespace.as_ref() == Some(ns))
            }) {
                Some(fault) => status(fault.code, &fault.reason, "injected by the test"),
                None => server.answer(&call, metadata_only, &content_type),
            }
        };
        self.notify();
        response
    }
}

/// The request's verb, resource, namespace, name and subresource, from its path.
fn parse(method: &Method, path: &str, query: Option<&str>, body: Option<Value>) -> Option<Call> {
    let rest = match path.strip_prefix("/api/v1/") {
        Some(rest) => rest,
        None => {
            let mut apis = path.strip_prefix("/apis/")?.splitn(3, '/');
            let (_group, _version) = (apis.next()?, apis.next()?);
            apis.next()?
        }
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, resource) = match segments.as_slice() {
        ["namespaces", ns, resource @ ..] if !resource.is_empty() => {
            (Some(ns.to_string()), resource)
        }
        resource => (None, resource),
    };
    let plural = resource.first()?.to_string();
    let mut name = resource.get(1).map(|s| s.to_string());
    let subresource = resource.get(2).map(|s| s.to_string());
    let verb = match (method.as_str(), &name) {
        ("GET", Some(_)) => Verb::Get,
        ("GET", None) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", _) => Verb::Delete,
        _ => return None,
    };
    if verb == Verb::Create {
        name = body
            .as_ref()
            .and_then(|b| b.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Some(Call {
        verb,
        plural,
        namespace,
        name,
        subresource,
        query: query.unwrap_or_default().to_string(),
        body,
    })
}

fn meta_str(object: &Value, field: &str) -> String {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code, "reason": reason, "message": message}),
    )
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// RFC 7386: a null removes the field, an object merges, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in fields {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// `key=value`, `key==value`, `key!=value`, `key` and `!key`, comma-separated.
fn selects(selector: &str, labels: &serde_json::Map<String, Value>) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let label = |key: &str| labels.get(key.trim()).and_then(Value::as_str);
        if let Some((key, value)) = term.split_once("!=") {
            label(key) != Some(value.trim())
        } else if let Some((key, value)) = term.split_once('=') {
            label(key) == Some(value.trim_start_matches('=').trim())
        } else if let Some(key) = term.strip_prefix('!') {
            label(key).is_none()
        } else {
            label(term).is_some()
        }
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl Server {
    fn stamp_new(&mut self, object: &mut Value) {
        self.last_version += 1;
        let version = self.last_version;
        let meta = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert(json!({})))
            .expect("an object");
        meta["resourceVersion"] = json!(version.to_string());
        meta["uid"] = json!(format!("uid-{version}"));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if meta.get("name").is_none() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("object-")
                .to_string();
            meta["name"] = json!(format!("{prefix}{version}"));
        }
    }

    fn run_race(&mut self, call: &Call) {
        let Some(at) = self.races.iter().position(|r| {
            r.verb == call.verb && r.plural == call.plural && call.name.as_deref() == Some(&r.name)
        }) else {
            return;
        };
        let race = self.races.remove(at);
        let key = (
            call.plural.clone(),
            call.namespace.clone().unwrap_or_default(),
            race.name,
        );
        if let Some(mut object) = self.objects.get(&key).cloned() {
            (race.change)(&mut object);
            self.bump(&mut object);
            self.store(key, &object);
        }
    }

    fn store(&mut self, key: (String, String, String), object: &Value) {
        self.changes
            .push((key.0.clone(), Change::Applied(object.clone())));
        self.objects.insert(key, object.clone());
    }

    fn bump(&mut self, object: &mut Value) {
        self.last_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.last_version.to_string());
    }

    fn answer(&mut self, call: &Call, metadata_only: bool, content_type: &str) -> Response<Body> {
        let key = (
            call.plural.clone(),
            call.namespace.clone().unwrap_or_default(),
            call.name.clone().unwrap_or_default(),
        );
        let body = call.body.clone().unwrap_or(Value::Null);
        if call.verb == Verb::List {
            return self.list(call, metadata_only);
        }
        if call.verb == Verb::Create {
            return self.create(key, body);
        }
        let Some(stored) = self.objects.get(&key).cloned() else {
            return status(404, "NotFound", &format!("{} {} not found", key.0, key.2));
        };
        let written = match call.verb {
            Verb::Get => return respond(200, &shown(&stored, metadata_only)),
            Verb::Delete => return self.delete(key, stored, &body),
            Verb::Update => update(stored, body, call.subresource.as_deref()),
            _ => patch(stored, body, call.subresource.as_deref(), content_type),
        };
        let Some(mut object) = written else {
            return status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        };
        if call.plural == "secrets" && type_of(&object) != type_of(&self.objects[&key]) {
            return status(422, "Invalid", "field is immutable: type");
        }
        self.bump(&mut object);
        self.store(key, &object);
        respond(200, &shown(&object, metadata_only))
    }

    fn create(&mut self, key: (String, String, String), mut object: Value) -> Response<Body> {
        if self.objects.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("{} {} already exists", key.0, key.2),
            );
        }
        if !key.1.is_empty() {
            object["metadata"]["namespace"] = json!(key.1);
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        self.stamp_new(&mut object);
        let key = (key.0, key.1, meta_str(&object, "name"));
        self.store(key, &object);
        respond(201, &object)
    }

    /// Gone, or only marked as going while finalizers remain.
    fn delete(
        &mut self,
        key: (String, String, String),
        mut object: Value,
        options: &Value,
    ) -> Response<Body> {
        let preconditions = options.get("preconditions").cloned().unwrap_or(Value::Null);
        for field in ["uid", "resourceVersion"] {
            let wanted = preconditions.get(field).and_then(Value::as_str);
            if wanted.is_some_and(|w| w != meta_str(&object, field)) {
                return status(409, "Conflict", &format!("precondition failed: {field}"));
            }
        }
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
            self.bump(&mut object);
            self.store(key, &object);
        } else {
            self.objects.remove(&key);
            self.changes.push((key.0, Change::Deleted(object.clone())));
        }
        respond(200, &object)
    }

    fn list(&self, call: &Call, metadata_only: bool) -> Response<Body> {
        let labels = query_param(&call.query, "labelSelector").unwrap_or_default();
        let fields = query_param(&call.query, "fieldSelector").unwrap_or_default();
        let named = fields.strip_prefix("metadata.name=");
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((plural, ns, name), _)| {
                *plural == call.plural
                    && call.namespace.as_ref().is_none_or(|n| n == ns)
                    && named.is_none_or(|n| n == name)
            })
            .filter(|(_, object)| {
                let none = serde_json::Map::new();
                let object_labels = object["metadata"]["labels"].as_object().unwrap_or(&none);
                selects(&labels, object_labels)
            })
            .map(|(_, object)| shown(object, metadata_only))
            .collect();
        let kind = if metadata_only {
            "PartialObjectMetadataList"
        } else {
            "List"
        };
        respond(
            200,
            &json!({"apiVersion": "v1", "kind": kind,
                "metadata": {"resourceVersion": self.last_version.to_string()}, "items": items}),
        )
    }
}

/// A replace: only at the version it names; identity kept; of a status, the status only.
fn update(stored: Value, mut object: Value, subresource: Option<&str>) -> Option<Value> {
    if !at_version(&stored, &object) {
        return None;
    }
    if subresource == Some("status") {
        let mut whole = stored;
        whole["status"] = object["status"].clone();
        return Some(whole);
    }
    for kept in ["uid", "creationTimestamp", "namespace"] {
        object["metadata"][kept] = stored["metadata"][kept].clone();
    }
    Some(object)
}

/// A merge patch (an apply patch taken as one: one field manager, forced), at the version it
/// names if it names one; of a status, the status only.
fn patch(
    mut object: Value,
    mut patch: Value,
    subresource: Option<&str>,
    content_type: &str,
) -> Option<Value> {
    if !at_version(&object, &patch) {
        return None;
    }
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    if subresource == Some("status") {
        patch = json!({"status": patch["status"].clone()});
        if content_type.contains("apply-patch") {
            // What the one field manager applies is the whole status.
            object["status"] = Value::Null;
        }
    }
    merge(&mut object, &patch);
    Some(object)
}

/// An object as answered: whole, or only its metadata.
fn shown(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": object["metadata"].clone()})
    } else {
        object.clone()
    }
}

fn type_of(object: &Value) -> String {
    object["type"].as_str().unwrap_or("Opaque").to_string()
}

/// Whether `request` names no resourceVersion or the stored one (else: 409).
fn at_version(stored: &Value, request: &Value) -> bool {
    request
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_none_or(|wanted| wanted == meta_str(stored, "resourceVersion"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};

    fn secret(name: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_fake_keeps_the_api_servers_preconditions() {
        let fake = FakeApi::default();
        let api: Api<Secret> = Api::namespaced(fake.client(), "ns");
        let created = api
            .create(&PostParams::default(), &secret("s"))
            .await
            .unwrap();
        let again = api.create(&PostParams::default(), &secret("s")).await;
        assert!(
            matches!(again, Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists")
        );
        // A replace at an older version is refused; a type change too.
        let mut stale = created.clone();
        stale.metadata.resource_version = Some("0".into());
        let refused = api.replace("s", &PostParams::default(), &stale).await;
        assert!(matches!(refused, Err(kube::Error::Api(e)) if e.code == 409));
        let mut retyped = created.clone();
        retyped.type_ = Some("kubernetes.io/basic-auth".into());
        let refused = api.replace("s", &PostParams::default(), &retyped).await;
        assert!(matches!(refused, Err(kube::Error::Api(e)) if e.code == 422));
        // Lists follow label selectors.
        let listed = api
            .list(&ListParams::default().labels("app=a,!other"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        let listed = api
            .list(&ListParams::default().labels("app!=a"))
            .await
            .unwrap();
        assert!(listed.items.is_empty());
        // A delete on another UID is refused, on its own it goes.
        let wrong_uid = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some("other".into()),
                resource_version: None,
            }),
            ..Default::default()
        };
        assert!(
            matches!(api.delete("s", &wrong_uid).await, Err(kube::Error::Api(e)) if e.code == 409)
        );
        api.delete("s", &DeleteParams::default()).await.unwrap();
        assert!(api.get_opt("s").await.unwrap().is_none());
        let verbs: Vec<Verb> = fake.calls().iter().map(|c| c.verb).collect();
        assert_eq!(
            verbs,
            [
                Verb::Create,
                Verb::Create,
                Verb::Update,
                Verb::Update,
                Verb::List,
                Verb::List,
                Verb::Delete,
                Verb::Delete,
                Verb::Get
            ]
        );
    }
}
