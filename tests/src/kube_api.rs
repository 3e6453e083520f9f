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
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Who makes the requests a client sends, and so which RBAC they are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Caller {
    /// The operator: its installed RBAC.
    Operator,
    /// A person's commands: their own RBAC, not checked.
    Person,
    /// The Job's pod of the Reprocess of that name: the Role the operator made for it.
    ReprocessPod(String),
}

/// What a hook does with a request (`FakeApi::on_request`).
pub enum Hook {
    /// Answer it as the server holds things.
    Answer,
    /// Never answer it (its client waits until it is dropped: a process killed mid-call).
    Hold,
    /// Answer it with this error status and change nothing (an API server that failed it).
    Fail(u16),
}

type HookFn = Box<dyn FnMut(&Received, &mut FakeState) -> Hook + Send>;

/// The objects and what happened to them; a hook may change them before a request is
/// answered (a deletion arriving in the middle of a run).
#[derive(Default)]
pub struct FakeState {
    objects: std::collections::BTreeMap<String, Value>,
    calls: Vec<Received>,
    events: Vec<Value>,
    /// Every status written (the object's path, the status after the write), in order.
    status_writes: Vec<(String, Value)>,
    /// Requests over HTTP that the caller's RBAC refused (`serve_http`), with why.
    forbidden: Vec<String>,
    resource_version: u64,
    /// Workloads report no ready pod.
    pods_down: bool,
    /// Workloads report a rollout under way (no pod on the current template yet).
    rolling: bool,
    hook: Option<HookFn>,
}

impl FakeApi {
    /// Serves `api` until dropped, as the operator's API server: every request must be one
    /// the operator's installed RBAC allows.
    pub fn start(api: ApiServer) -> FakeApi {
        Self::serve(api, Caller::Operator)
    }

    /// Serves `api` for a person's commands (`kubectl sightline`), whose RBAC is theirs.
    pub fn start_for_a_person(api: ApiServer) -> FakeApi {
        Self::serve(api, Caller::Person)
    }

    fn serve(api: ApiServer, caller: Caller) -> FakeApi {
        let state = std::sync::Arc::new(std::sync::Mutex::new(FakeState::default()));
        let task = Self::serve_into(state.clone(), api, caller);
        FakeApi {
            state,
            tasks: vec![task],
        }
    }

    /// A client for the Job's pod of Reprocess `name`, served by this same server: each of
    /// its requests must be one the Role the operator made for that pod (`<name>-replay`,
    /// in the request's namespace) allows.
    pub fn client_for_reprocess_pod(&mut self, name: &str) -> kube::Client {
        let (client, api) = mock_client();
        let task = Self::serve_into(self.state.clone(), api, Caller::ReprocessPod(name.to_string()));
        self.tasks.push(task);
        client
    }

    /// A client for a person's commands (`kubectl sightline`) on this same server; their
    /// RBAC is theirs, not checked.
    pub fn client_for_a_person(&mut self) -> kube::Client {
        let (client, api) = mock_client();
        let task = Self::serve_into(self.state.clone(), api, Caller::Person);
        self.tasks.push(task);
        client
    }

    fn serve_into(
        shared: std::sync::Arc<std::sync::Mutex<FakeState>>,
        mut api: ApiServer,
        caller: Caller,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Requests a hook holds: never answered while this server lives.
            let mut held = Vec::new();
            loop {
                let next = api.handle.next_request().await;
                let Some((request, reply)) = next else { return };
                let received = Self::received(request).await;
                let mut state = shared.lock().unwrap();
                if let Err(refused) = state.check_rbac(&caller, &received) {
                    panic!("{refused}");
                }
                let mut hook = state.hook.take();
                let decision = hook.as_mut().map_or(Hook::Answer, |h| h(&received, &mut state));
                if state.hook.is_none() {
                    state.hook = hook;
                }
                match decision {
                    Hook::Hold => {
                        state.calls.push(received);
                        held.push(reply);
                        continue;
                    }
                    Hook::Fail(code) => {
                        state.calls.push(received);
                        drop(state);
                        respond(reply, code, &api_status(code, "InternalError", "failed by the test"));
                        continue;
                    }
                    Hook::Answer => {}
                }
                let (status, body) = state.answer(&received);
                drop(state);
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
        })
    }

    /// Serves the same objects over HTTP on 127.0.0.1 (a free port), for the binary in a
    /// Job's pod (it reads a kubeconfig); returns its URL. The bearer token says whose pod
    /// calls (`reprocess_pod_token`), and each request is checked against the Role the
    /// operator made for that pod (`<name>-replay`, in the request's namespace): one it does
    /// not allow is answered 403 Forbidden, as the API server does, and kept for
    /// `forbidden()`; a request without such a token is answered 401. Hooks do not see
    /// these requests.
    pub async fn serve_http(&mut self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = self.state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
                let shared = shared.clone();
                async move {
                    let received = Received {
                        method,
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or_default().to_string(),
                        content_type: headers
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                        body: if body.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&body).unwrap_or(Value::Null)
                        },
                    };
                    let caller = headers
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .and_then(|token| token.strip_prefix(REPROCESS_POD_TOKEN))
                        .map(|name| Caller::ReprocessPod(name.to_string()));
                    let mut state = shared.lock().unwrap();
                    let (status, body) = match caller {
                        None => (401, api_status(401, "Unauthorized", "no Job pod's token")),
                        Some(caller) => match state.check_rbac(&caller, &received) {
                            Ok(()) => state.answer(&received),
                            Err(refused) => {
                                state.calls.push(received);
                                state.forbidden.push(refused.clone());
                                (403, api_status(403, "Forbidden", &refused))
                            }
                        },
                    };
                    (
                        http::StatusCode::from_u16(status).expect("a status code"),
                        axum::Json(body),
                    )
                }
            },
        );
        self.tasks.push(tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        }));
        url
    }

    /// Sets the hook that sees each request of the mocked clients before it is answered.
    pub fn on_request(&self, hook: impl FnMut(&Received, &mut FakeState) -> Hook + Send + 'static) {
        self.state.lock().unwrap().hook = Some(Box::new(hook));
    }

    /// Every object whose path starts with `prefix`.
    pub fn objects_under(&self, prefix: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every status written so far: (the object's path, the status after the write).
    pub fn status_writes(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().status_writes.clone()
    }

    /// The requests over HTTP that their caller's RBAC refused so far, with why.
    pub fn forbidden(&self) -> Vec<String> {
        self.state.lock().unwrap().forbidden.clone()
    }

    /// Every Event recorded so far (`take_events` also forgets them).
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
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
        self.state.lock().unwrap().delete(path)
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
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeState {
    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.get(path).cloned()
    }

    /// Changes an object in place with a new resourceVersion (another writer's change).
    pub fn edit(&mut self, path: &str, change: impl FnOnce(&mut Value)) {
        self.resource_version += 1;
        let version = self.resource_version.to_string();
        let object = self
            .objects
            .get_mut(path)
            .unwrap_or_else(|| panic!("no object at {path}"));
        change(object);
        object["metadata"]["resourceVersion"] = json!(version);
    }

    /// A DELETE: gone at once without finalizers (true), else a deletion timestamp and a
    /// new resourceVersion, as every change of an object gets (false).
    pub fn delete(&mut self, path: &str) -> bool {
        let held = self
            .objects
            .get(path)
            .is_some_and(|o| o["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()));
        if held {
            self.resource_version += 1;
            let version = self.resource_version.to_string();
            let object = self.objects.get_mut(path).unwrap();
            object["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
            object["metadata"]["resourceVersion"] = json!(version);
            false
        } else {
            self.objects.remove(path).is_some()
        }
    }

    /// Whether `caller`'s RBAC allows `r`; what is missing and whose RBAC it is when not.
    fn check_rbac(&self, caller: &Caller, r: &Received) -> Result<(), String> {
        let (rbac, whose) = match caller {
            Caller::Person => return Ok(()),
            Caller::Operator => (
                crate::rbac::Rbac::installed().clone(),
                "the operator; add the rule to charts/sightline/templates/rbac.yaml and run scripts/render-manifests.sh".to_string(),
            ),
            Caller::ReprocessPod(name) => {
                let namespace = crate::rbac::attributes(&r.method, &r.path, &r.query)
                    .and_then(|a| a.first().and_then(|a| a.namespace.clone()))
                    .unwrap_or_default();
                let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}-replay");
                let Some(role) = self.objects.get(&path) else {
                    return Err(format!(
                        "the Job's pod of {name} called {} {} with no Role at {path}",
                        r.method, r.path
                    ));
                };
                let yaml = serde_yaml::to_string(role).expect("a Role as YAML");
                let rbac = crate::rbac::Rbac::from_bundle(&yaml).unwrap_or_else(|e| panic!("{path}: {e}"));
                (rbac, format!("the Job's pod of {name} (its Role {path})"))
            }
        };
        rbac.check(&r.method, &r.path, &r.query).map_err(|missing| {
            format!(
                "{} {}?{} is not allowed ({missing}) for {whose}",
                r.method, r.path, r.query
            )
        })
    }

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
                let Some(mut object) = self.objects.get(&path).cloned() else {
                    return (404, not_found(&path));
                };
                let wanted = &r.body["metadata"]["resourceVersion"];
                if !wanted.is_null() && *wanted != object["metadata"]["resourceVersion"] {
                    return (409, conflict(&path));
                }
                // A merge patch merges into the status; an apply here writes it whole.
                if r.content_type.contains("merge-patch") {
                    json_patch::merge(&mut object["status"], &r.body["status"]);
                } else {
                    object["status"] = r.body["status"].clone();
                }
                let object = self.store(&path, object);
                self.status_writes.push((path, object["status"].clone()));
                (200, object)
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
                let spec_before = object["spec"].clone();
                json_patch::merge(&mut object, &patch);
                // A change of the spec is a new generation, as the API server counts them.
                if object["spec"] != spec_before {
                    let g = object["metadata"]["generation"].as_i64().unwrap_or(1);
                    object["metadata"]["generation"] = json!(g + 1);
                }
                let gone = object["metadata"]["deletionTimestamp"].is_string()
                    && object["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
                if gone {
                    let removed = self.objects.remove(&r.path).unwrap_or_default();
                    return (200, removed);
                }
                let object = self.store(&r.path, object);
                (200, object)
            }
            Method::DELETE => match self.objects.get(&r.path).cloned() {
                None => (404, not_found(&r.path)),
                // DeleteOptions' preconditions, as the API server checks them.
                Some(before)
                    if ["uid", "resourceVersion"].iter().any(|k| {
                        let wanted = &r.body["preconditions"][*k];
                        !wanted.is_null() && *wanted != before["metadata"][*k]
                    }) =>
                {
                    (409, conflict(&r.path))
                }
                Some(before) => match self.delete(&r.path) {
                    true => (200, before),
                    false => (200, self.objects[&r.path].clone()),
                },
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
/// What the bearer token of the Job's pod of a Reprocess starts with, before its name
/// (`serve_http`).
const REPROCESS_POD_TOKEN: &str = "reprocess-pod:";

/// The bearer token `serve_http` takes for the Job's pod of Reprocess `name`.
pub fn reprocess_pod_token(name: &str) -> String {
    format!("{REPROCESS_POD_TOKEN}{name}")
}

/// A `Status` failure as the API server answers it.
fn api_status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

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
