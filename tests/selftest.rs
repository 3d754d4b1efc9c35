//! The start-up self-test and `GET /healthz?deep=1` against the real binary.
mod common;

use common::Server;

async fn deep_health(server: &Server) -> (u16, serde_json::Value) {
    let resp = server
        .client()
        .get(server.https_url("/healthz?deep=1"))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

fn check<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {body}"))
}

#[tokio::test]
async fn the_self_test_relays_through_its_own_turn_listener_at_start_and_on_demand() {
    let server = Server::start(&common::base_config(""));
    assert!(
        server.log_contains("self-test turn-relay: ok: allocated"),
        "{}",
        server.stderr_text()
    );
    assert!(server.log_contains("self-test certificate: ok"));
    let (status, body) = deep_health(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(check(&body, "turn-relay")["status"], "ok");
    assert_eq!(check(&body, "relay-address")["status"], "ok");
    assert_eq!(check(&body, "certificate")["status"], "ok");
}

#[tokio::test]
async fn a_wrong_external_ip_is_reported_by_the_self_test() {
    let server = Server::start(&common::base_config(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nrelay_ip = \"127.0.0.1\"\nexternal_ip = \"198.51.100.7\"\n",
    ));
    assert!(server.log_contains("self-test external-address: WARNING: external_ip 198.51.100.7 is not an address of this host"));
    let (status, body) = deep_health(&server).await;
    assert_eq!(status, 200, "a warning is not a failure: {body}");
    assert_eq!(check(&body, "external-address")["status"], "warn");
}

#[tokio::test]
async fn plain_healthz_does_not_run_the_checks() {
    let server = Server::start(&common::base_config(""));
    let body: serde_json::Value = server
        .client()
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("checks").is_none());
}

/// `signalbox_turn_allocations_created_total{transport="udp"}` from the metrics listener.
async fn udp_allocations_created(server: &Server) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.addr("metrics")))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("signalbox_turn_allocations_created_total{transport=\"udp\"} ")
        })
        .expect("the series is there")
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn thirty_deep_checks_at_once_run_the_self_test_once_and_all_answer_200() {
    let server = Server::start(&common::base_config(""));
    assert!(server.log_contains("self-test turn-relay: ok"));
    let before = udp_allocations_created(&server).await;
    let calls = (0..30).map(|_| deep_health(&server));
    let answers = futures_util::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(check(body, "turn-relay")["status"], "ok", "{body}");
    }
    let made = udp_allocations_created(&server).await - before;
    assert_eq!(
        made, 2.0,
        "one run of the self-test (two allocations) served all 30"
    );
}
