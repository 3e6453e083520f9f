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
    pub body: Value,
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
