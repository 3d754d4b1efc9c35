//! The credential API for other apps, against the real binary: keys, shapes, rate limits,
//! CORS, and no API at all when no key is configured.

mod common;
mod turn_raw;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use common::Server;
use turn_raw::{addr_of_uri, TurnClient};

const SECRET: &str = "api-test-secret";
const KEY: &str = "0123456789abcdef-synapse";
const APP: &str = "https://app.example.org";

fn turn_section() -> String {
    format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\nworkers = 1\n"
    )
}

fn start(api: &str) -> Server {
    Server::start(&common::base_config(&format!("{}\n{api}", turn_section())))
}

fn with_key(extra: &str) -> Server {
    start(&format!(
        "[api]\ncors_origins = [\"{APP}\"]\n{extra}\n[[api.keys]]\nname = \"synapse\"\nkey = \"{KEY}\"\n"
    ))
}

fn rest_password(username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    let mac = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.as_ref())
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("a JSON error body");
    body["error"].as_str().expect("an error code").to_owned()
}

#[tokio::test]
async fn without_a_configured_key_the_endpoints_do_not_exist() {
    let server = start("");
    let client = server.client();
    let get = client
        .get(server.https_url(&format!("/api/turn?service=turn&key={KEY}")))
        .send()
        .await
        .expect("request");
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(get).await, "not-found");
    let post = client
        .post(server.https_url("/api/ice-servers"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_turn_with_the_key_answers_the_rest_api_shape_and_the_credentials_work() {
    let server = with_key("");
    let resp = server
        .client()
        .get(server.https_url(&format!(
            "/api/turn?service=turn&username=@alice:example.org&key={KEY}"
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.expect("JSON");
    let username = body["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("EXPIRY:USER");
    assert_eq!(user, "@alice:example.org");
    assert!(expiry.parse::<u64>().is_ok());
    assert_eq!(body["password"], rest_password(username));
    assert_eq!(body["ttl"], 3600);
    let turn_port = server.addr("turn-udp").port();
    let port = |name: &str| server.addr(name).port();
    // Every transport, fastest first; TURN over TLS on the HTTPS port last (one-port mode).
    assert_eq!(
        body["uris"],
        serde_json::json!([
            format!("turn:127.0.0.1:{turn_port}?transport=udp"),
            format!("turn:127.0.0.1:{}?transport=tcp", port("turn-tcp")),
            format!("turn:127.0.0.1:{}?transport=tcp", port("https")),
            format!("turns:127.0.0.1:{}?transport=tcp", port("turn-tls")),
            format!("turns:127.0.0.1:{}?transport=tcp", port("https")),
        ])
    );
    let uri = body["uris"][0].as_str().expect("uri");
    let password = body["password"].as_str().expect("password");
    let mut turn = TurnClient::new(addr_of_uri(uri), username, password);
    assert!(turn.allocate().is_success());
}

#[tokio::test]
async fn post_ice_servers_with_a_bearer_key_answers_an_rtc_configuration_list() {
    let server = with_key("");
    let resp = server
        .client()
        .post(server.https_url("/api/ice-servers"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"username": "app-user-7"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["ttl"], 3600);
    let list = body["iceServers"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{body}");
    assert!(list[0]["urls"][0]
        .as_str()
        .unwrap_or("")
        .starts_with("stun:"));
    let username = list[1]["username"].as_str().expect("username");
    assert!(username.ends_with(":app-user-7"), "{username}");
    assert_eq!(list[1]["credential"], rest_password(username));

    let empty = server
        .client()
        .post(server.https_url("/api/ice-servers"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(empty.status(), StatusCode::OK, "the body is optional");
}

#[tokio::test]
async fn the_api_cannot_mint_a_room_peers_user_part() {
    let server = with_key("");
    let client = server.client();
    let get = client
        .get(server.https_url(&format!(
            "/api/turn?service=turn&username=~standup:QDfRxl5FdUfrAVTuSgQriA&key={KEY}"
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(get.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(get).await, "bad-request");
    let post = client
        .post(server.https_url("/api/ice-servers"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"username": "~standup:QDfRxl5FdUfrAVTuSgQriA"}))
        .send()
        .await
        .expect("request");
    assert_eq!(post.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_or_wrong_keys_get_401_with_a_json_error() {
    let server = with_key("");
    let client = server.client();
    let cases = [
        client.get(server.https_url("/api/turn?service=turn")),
        client.get(server.https_url("/api/turn?service=turn&key=0123456789abcdef-synapsE")),
        client.get(server.https_url("/api/turn?service=turn&key=0123456789abcdef")),
        client.post(server.https_url("/api/ice-servers")),
        client
            .post(server.https_url("/api/ice-servers"))
            .bearer_auth("0123456789abcdef-wrong"),
        client
            .post(server.https_url("/api/ice-servers"))
            .header("authorization", format!("Basic {KEY}")),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "case {i}");
        assert_eq!(error_code(resp).await, "unauthorized", "case {i}");
    }
    let bad_service = client
        .get(server.https_url(&format!("/api/turn?service=stun&key={KEY}")))
        .send()
        .await
        .expect("request");
    assert_eq!(bad_service.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let server =
        with_key("rate_limit_per_key = 1\nrate_limit_per_ip = 6000\nrate_limit_burst = 3\n");
    let client = server.client();
    let url = server.https_url(&format!("/api/turn?service=turn&key={KEY}"));
    for i in 0..3 {
        let resp = client.get(&url).send().await.expect("request");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "request {i} is within the burst"
        );
    }
    let resp = client.get(&url).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "one request per minute: {retry}");
    assert_eq!(error_code(resp).await, "rate-limited");
}

#[tokio::test]
async fn an_address_over_its_rate_gets_429_even_with_wrong_keys() {
    let server =
        with_key("rate_limit_per_key = 6000\nrate_limit_per_ip = 1\nrate_limit_burst = 2\n");
    let client = server.client();
    let wrong = server.https_url("/api/turn?service=turn&key=guess-guess-guess-1");
    for _ in 0..2 {
        let resp = client.get(&wrong).send().await.expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let right = server.https_url(&format!("/api/turn?service=turn&key={KEY}"));
    let resp = client.get(&right).send().await.expect("request");
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "guessing used up this address's budget"
    );
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn cors_answers_only_listed_origins() {
    let server = with_key("");
    let client = server.client();
    let preflight = |origin: &str| {
        client
            .request(Method::OPTIONS, server.https_url("/api/ice-servers"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight(APP).await.expect("request");
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(ok.headers()["access-control-allow-origin"], APP);
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or("")
        .contains("authorization"));
    assert!(ok.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap_or("")
        .contains("POST"));
    assert_eq!(ok.headers()["vary"], "origin");

    let evil = preflight("https://evil.example").await.expect("request");
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    assert!(!evil.headers().contains_key("access-control-allow-origin"));

    let listed = client
        .post(server.https_url("/api/ice-servers"))
        .bearer_auth(KEY)
        .header("origin", APP)
        .send()
        .await
        .expect("request");
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(listed.headers()["access-control-allow-origin"], APP);
    let unlisted = client
        .post(server.https_url("/api/ice-servers"))
        .bearer_auth(KEY)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert!(!unlisted
        .headers()
        .contains_key("access-control-allow-origin"));
    assert_eq!(unlisted.headers()["vary"], "origin");
}
