//! A mocked Kubernetes API server for the operator's tests, after kube-rs's own mock tests
//! and controller-rs's fixtures: the operator's `kube::Client` talks to a tower-test mock
//! service, and the test plays the API server's side, call by call, asserting each request
//! (method, path, field manager, body) and answering it. Kafka and ClickHouse behind the
//! reconciler are real (the test broker and the ClickHouse HTTP front over libchdb). Every
//! request must also be one the operator's installed RBAC allows (`crate::rbac`).

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

/// A request the operator made.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Received {
    /// Whether it changes something in the cluster (anything but a read).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    /// Whether it writes a status subresource or records an Event (what a paused tenant
    /// still does).
    pub fn is_status_or_event(&self) -> bool {
        self.path.ends_with("/status") || self.path.contains("/events")
    }
}

impl Received {
    /// A server-side apply under the operator's one field manager, forced.
    pub fn assert_applied_by_the_operator(&self) {
        assert_eq!(self.method, Method::PATCH, "{self:?}");
        assert!(
            self.query.contains("fieldManager=sightline-operator") && self.query.contains("force=true"),
            "not a forced server-side apply by sightline-operator: {self:?}"
        );
    }
}

/// The API server side of a mocked client.
pub struct ApiServer {
    handle: Handle,
}

/// A client whose requests go to the returned `ApiServer`.
pub fn mock_client() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

/// The answer to a request.
pub fn respond(reply: Reply, status: u16, body: &Value) {
    reply.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("response"),
    );
}

/// The API's 404.
pub fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{name} not found"), "reason": "NotFound", "code": 404})
}

impl ApiServer {
    /// The next request and the means to answer it; panics when none comes within 30 s, or
    /// when the operator's RBAC (manifests/install.yaml) would refuse it.
    pub async fn next(&mut self) -> (Received, Reply) {
        let (request, reply) = tokio::time::timeout(Duration::from_secs(30), self.handle.next_request())
            .await
            .expect("the operator made no further API request within 30 s")
            .expect("the client is gone");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        if let Err(missing) = crate::rbac::Rbac::installed().check(&method, &path, &query) {
            panic!(
                "the operator made {method} {path}?{query}, which its RBAC does not allow ({missing}): \
                 add the rule to charts/sightline/templates/rbac.yaml and run scripts/render-manifests.sh"
            );
        }
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        (
            Received {
                method,
                path,
                query,
                content_type,
                body,
            },
            reply,
        )
    }

    /// Expects `method` on `path` and answers with what `answer` makes of the request.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        answer: impl FnOnce(&Received) -> (u16, Value),
    ) -> Received {
        let (received, reply) = self.next().await;
        assert_eq!(
            (&received.method, received.path.as_str()),
            (&method, path),
            "unexpected API request: {received:?}"
        );
        let (status, body) = answer(&received);
        respond(reply, status, &body);
        received
    }

    /// Expects a server-side apply on `path` and answers with the applied object (plus
    /// `status`, as if its controller reported it).
    pub async fn expect_apply(&mut self, path: &str, status: Option<Value>) -> Received {
        let received = self
            .expect(Method::PATCH, path, |r| {
                let mut object = r.body.clone();
                if let Some(status) = &status {
                    object["status"] = status.clone();
                }
                object["metadata"]["uid"] = json!("uid-child");
                (200, object)
            })
            .await;
        received.assert_applied_by_the_operator();
        received
    }

    /// Expects `n` Events (events.k8s.io/v1, in `namespace`); returns their reasons.
    pub async fn expect_events(&mut self, namespace: &str, n: usize) -> Vec<String> {
        let mut reasons = Vec::new();
        for _ in 0..n {
            let r = self
                .expect(
                    Method::POST,
                    &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
                    |r| (201, r.body.clone()),
                )
                .await;
            reasons.push(r.body["reason"].as_str().unwrap_or_default().to_string());
        }
        reasons
    }

    /// Asserts that no request arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.handle.next_request()).await {
            panic!("expected no API request, got {} {}", request.method(), request.uri());
        }
    }
}

/// A stateful API server for scenarios too long to script call by call: it keeps objects
/// by path and answers GET, POST (create; Events are kept apart), PATCH (server-side apply
/// as a deep merge, JSON merge patch with the resourceVersion check, `/status`) and DELETE
/// (at once without finalizers, else a deletion timestamp) like the API server does for
/// these requests, and logs every request. Workloads get a status as their controllers
/// would write it: all pods ready and on the current template, unless told otherwise.
pub struct FakeApi {
    state: std::sync::Arc<std::sync::Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct FakeState {
    objects: std::collections::BTreeMap<String, Value>,
    calls: Vec<Received>,
    events: Vec<Value>,
    resource_version: u64,
    /// Workloads report no ready pod.
    pods_down: bool,
    /// Workloads report a rollout under way (no pod on the current template yet).
    rolling: bool,
}

impl FakeApi {
    /// Serves `api` until dropped, as the operator's API server: every request must be one
    /// the operator's installed RBAC allows.
    pub fn start(api: ApiServer) -> FakeApi {
        Self::serve(api, true)
    }

    /// Serves `api` for a person's commands (`kubectl sightline`), whose RBAC is theirs.
    pub fn start_for_a_person(api: ApiServer) -> FakeApi {
        Self::serve(api, false)
    }

    fn serve(mut api: ApiServer, check_rbac: bool) -> FakeApi {
        let state = std::sync::Arc::new(std::sync::Mutex::new(FakeState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = api.handle.next_request().await;
                let Some((request, reply)) = next else { return };
                let received = Self::received(request).await;
                if check_rbac {
                    if let Err(missing) =
                        crate::rbac::Rbac::installed().check(&received.method, &received.path, &received.query)
                    {
                        panic!(
                            "the operator made {} {}?{}, which its RBAC does not allow ({missing}): \
                             add the rule to charts/sightline/templates/rbac.yaml and run scripts/render-manifests.sh",
                            received.method, received.path, received.query
                        );
                    }
                }
                let (status, body) = shared.lock().unwrap().answer(&received);
                match (&body, received.path.ends_with("/log")) {
                    // Logs are plain text.
                    (Value::String(text), true) => reply.send_response(
                        Response::builder()
                            .status(status)
                            .body(Body::from(text.clone().into_bytes()))
                            .expect("response"),
                    ),
                    _ => respond(reply, status, &body),
                }
            }
        });
        FakeApi { state, task }
    }

    async fn received(request: Request<Body>) -> Received {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        Received {
            method,
            path,
            query,
            content_type,
            body,
        }
    }

    /// Puts an object at its path (as if created by someone else).
    pub fn put(&self, path: &str, object: Value) {
        let mut s = self.state.lock().unwrap();
        s.resource_version += 1;
        let mut object = object;
        if object.is_object() {
            object["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        }
        s.objects.insert(path.to_string(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Removes an object (as a person's `kubectl delete` of an object without finalizers).
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.remove(path)
    }

    /// A person's DELETE, as the API server answers it: the object is gone at once when no
    /// finalizer holds it (true), else it gets a deletion timestamp and stays (false).
    pub fn delete(&self, path: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let held = s
            .objects
            .get(path)
            .is_some_and(|o| o["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()));
        if held {
            s.objects.get_mut(path).unwrap()["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
            false
        } else {
            s.objects.remove(path).is_some()
        }
    }

    /// Changes an object in place (a hand edit).
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        let object = s.objects.get_mut(path).unwrap_or_else(|| panic!("no object at {path}"));
        change(object);
    }

    /// Every request since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<Received> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }

    /// Every Event recorded since the last `take_events`.
    pub fn take_events(&self) -> Vec<Value> {
        std::mem::take(&mut self.state.lock().unwrap().events)
    }

    pub fn set_pods_down(&self, down: bool) {
        self.state.lock().unwrap().pods_down = down;
    }

    pub fn set_rolling(&self, rolling: bool) {
        let mut s = self.state.lock().unwrap();
        s.rolling = rolling;
        let paths: Vec<String> = s.objects.keys().cloned().collect();
        for path in paths {
            let (pods_down, rolling) = (s.pods_down, s.rolling);
            if let Some(o) = s.objects.get_mut(&path) {
                workload_status(o, pods_down, rolling);
            }
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeState {
    fn answer(&mut self, r: &Received) -> (u16, Value) {
        self.calls.push(r.clone());
        let status_of = r.path.strip_suffix("/status");
        match r.method.clone() {
            Method::GET => match self.objects.get(&r.path) {
                Some(o) => (200, o.clone()),
                None if is_collection(&r.path) => (200, self.list(&r.path, &r.query)),
                None => (404, not_found(&r.path)),
            },
            Method::POST if r.path.ends_with("/events") => {
                self.events.push(r.body.clone());
                (201, r.body.clone())
            }
            Method::POST => {
                let name = r.body["metadata"]["name"].as_str().unwrap_or_default();
                let path = format!("{}/{name}", r.path);
                if self.objects.contains_key(&path) {
                    return (409, conflict(&path));
                }
                let object = self.store(&path, r.body.clone());
                (201, object)
            }
            Method::PATCH if status_of.is_some() => {
                let path = status_of.unwrap_or_default().to_string();
                match self.objects.get_mut(&path) {
                    Some(o) => {
                        o["status"] = r.body["status"].clone();
                        (200, o.clone())
                    }
                    None => (404, not_found(&path)),
                }
            }
            Method::PATCH if r.content_type.contains("apply-patch") => {
                let mut object = self.objects.get(&r.path).cloned().unwrap_or_else(|| json!({}));
                let spec_before = object["spec"].clone();
                merge_apply(&mut object, &r.body);
                if object["metadata"]["generation"].is_null() {
                    object["metadata"]["generation"] = json!(1);
                } else if object["spec"] != spec_before {
                    let g = object["metadata"]["generation"].as_i64().unwrap_or(1);
                    object["metadata"]["generation"] = json!(g + 1);
                }
                let object = self.store(&r.path, object);
                (200, object)
            }
            Method::PATCH => {
                let Some(mut object) = self.objects.get(&r.path).cloned() else {
                    return (404, not_found(&r.path));
                };
                let mut patch = r.body.clone();
                if let Some(rv) = patch["metadata"]
                    .as_object_mut()
                    .and_then(|m| m.remove("resourceVersion"))
                {
                    if rv != object["metadata"]["resourceVersion"] {
                        return (409, conflict(&r.path));
                    }
                }
                json_patch::merge(&mut object, &patch);
                let gone = object["metadata"]["deletionTimestamp"].is_string()
                    && object["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
                if gone {
                    let removed = self.objects.remove(&r.path).unwrap_or_default();
                    return (200, removed);
                }
                let object = self.store(&r.path, object);
                (200, object)
            }
            Method::DELETE => match self.objects.get_mut(&r.path) {
                None => (404, not_found(&r.path)),
                Some(o) if o["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) => {
                    o["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
                    (200, o.clone())
                }
                Some(_) => (200, self.objects.remove(&r.path).unwrap_or_default()),
            },
            other => panic!("the fake API server does not answer {other} {}", r.path),
        }
    }

    /// The objects right under a collection path, filtered by the `labelSelector` of the
    /// query (`k=v` terms, comma-separated).
    fn list(&self, collection: &str, query: &str) -> Value {
        let selector: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("labelSelector="))
            .flat_map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .split(',')
                    .filter_map(|t| t.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect::<Vec<_>>()
            })
            .collect();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(path, _)| {
                path.strip_prefix(collection)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|name| !name.contains('/'))
            })
            .map(|(_, o)| o.clone())
            .filter(|o| {
                selector
                    .iter()
                    .all(|(k, v)| o["metadata"]["labels"][k.as_str()].as_str() == Some(v.as_str()))
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.resource_version.to_string()}, "items": items})
    }

    /// Stores an object with a uid and a new resourceVersion, and the status its
    /// controller would give it.
    fn store(&mut self, path: &str, mut object: Value) -> Value {
        self.resource_version += 1;
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}", self.resource_version));
        }
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        workload_status(&mut object, self.pods_down, self.rolling);
        self.objects.insert(path.to_string(), object.clone());
        object
    }
}

/// The status a Deployment or StatefulSet controller would write.
fn workload_status(object: &mut Value, pods_down: bool, rolling: bool) {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(2);
    let ready = if pods_down { 0 } else { replicas };
    let updated = if rolling { 0 } else { replicas };
    match object["kind"].as_str() {
        Some("Deployment") => {
            object["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                "updatedReplicas": updated, "availableReplicas": ready, "readyReplicas": ready});
        }
        Some("StatefulSet") => {
            object["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                "readyReplicas": ready, "updatedReplicas": updated, "currentRevision": "r1",
                "updateRevision": if rolling { "r2" } else { "r1" }});
        }
        _ => {}
    }
}

/// Server-side apply, as far as these tests need it: the applied fields over the object's
/// (maps merged, lists and scalars replaced).
fn merge_apply(object: &mut Value, applied: &Value) {
    match (object, applied) {
        (Value::Object(o), Value::Object(a)) => {
            for (k, v) in a {
                merge_apply(o.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (o, a) => *o = a.clone(),
    }
}

/// The API's 409.
pub fn conflict(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{name}: the object has been modified or already exists"), "reason": "Conflict", "code": 409})
}

/// Whether a path names a collection (`…/namespaces/ns/kind`, `/apis/g/v/kind`).
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", _, "namespaces", _, _] | ["apis", _, _, "namespaces", _, _] => true,
        ["api", _, kind] | ["apis", _, _, kind] => *kind != "namespaces",
        _ => false,
    }
}
