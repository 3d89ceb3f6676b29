//! The OpenAPI document (docs/openapi/gateway.json) against the routes: the router's
//! source declares exactly the documented routes, each documented route reaches a
//! handler of the running binary, and `/openapi.json` serves the committed document.
//! (`scripts/check-openapi` then runs schemathesis against it.)

use crate::harness::{FAST, Server};
use preau_client::{dev_token, http_get, http_with};
use preau_ops::testing::{routes_in_openapi, routes_in_source};

const DOC: &str = include_str!("../../../docs/openapi/gateway.json");

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let source = include_str!("../../src/http.rs");
    let routes = routes_in_source(source);
    assert!(routes.len() > 20, "the scan found {routes:?}");
    assert_eq!(routes, routes_in_openapi(DOC).expect("the document parses"), "routes (left) and OpenAPI (right)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_gateway_serves_its_document_and_each_documented_route() {
    let s = Server::start(FAST);
    let (st, served) = http_get(&s.addr, "/openapi.json").await.expect("openapi");
    assert_eq!((st, served.as_str()), (200, DOC));
    let admin = dev_token(&s.addr, "ad01").await.expect("token");
    for (method, path) in routes_in_openapi(DOC).expect("parses") {
        if path == "/ws" {
            continue; // An upgrade, tried by every other test.
        }
        let concrete = path.replace("{id}", "e001").replace("{class}", "6A").replace("{uai}", "0750001A");
        let (st, body) = http_with(&s.addr, &method, &concrete, &admin, "{}").await.expect("request");
        // axum's "no such route" is a 404 with an empty body, "no such method" a 405:
        // every handler of ours answers with a body.
        assert!(st != 405 && !(st == 404 && body.is_empty()), "{method} {concrete}: {st} {body:?}");
    }
}

/// What schemathesis found, kept: a JSON array read as a document, an id no directory
/// could hold taken for a person with no data, a time before the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_ids_the_document_refuses_are_refused() {
    let s = Server::start(FAST);
    let admin = dev_token(&s.addr, "ad01").await.expect("token");
    for (method, path, body, reason) in [
        ("POST", "/admin/directory", "[]", "invalid_json"),
        ("PUT", "/admin/suspension", r#"["school", null, false]"#, "invalid_json"),
        (
            "PUT",
            "/admin/suspension",
            r#"{"scope":"school","suspended":false,"announcement_open":true}"#,
            "invalid_json",
        ),
        ("GET", "/admin/users/~/export", "", "bad_user"),
        ("DELETE", "/admin/users/e001/data?school=", "", "bad_school"),
        ("GET", "/admin/audit?since=-1", "", "bad_since"),
    ] {
        let (st, answer) = http_with(&s.addr, method, path, &admin, body).await.expect("request");
        assert!(st == 400 && answer.contains(reason), "{method} {path} {body}: {st} {answer}");
    }
}
