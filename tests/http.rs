mod common;

use common::Server;

#[tokio::test]
async fn healthz_answers_with_status_version_and_uptime() {
    let server = Server::start(&common::base_config(""));
    let resp = server
        .client()
        .get(server.https_url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64());
}
