//! Smoke test of the benchmark harness: a short TURN run against the real server and the
//! reference forwarder, checked through the JSON report it writes.

use std::process::Command;

#[test]
fn a_short_turn_run_relays_every_packet_and_reports_cpu_per_packet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_signalbox-bench"))
        .args(["--rounds", "1", "--duration", "500ms", "--report"])
        .arg(&report)
        .args([
            "turn",
            "--clients",
            "4",
            "--rate",
            "1000",
            "--sizes",
            "100",
            "--workers",
            "1",
        ])
        .output()
        .expect("run signalbox-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("signalbox w1"), "table: {stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("report is JSON");
    let rows = json["rows"].as_array().expect("rows");
    for server in ["signalbox", "limit"] {
        let row = rows
            .iter()
            .find(|r| r["server"] == server && r["workload"] == "turn")
            .unwrap_or_else(|| panic!("no {server} row in {json}"));
        let f = &row["figures"];
        // 1000 round trips/s for 0.5 s on loopback: every one comes back.
        assert!(f["rt_s"].as_f64().unwrap_or(0.0) > 900.0, "{server}: {f}");
        assert_eq!(f["loss_pct"].as_f64(), Some(0.0), "{server}: {f}");
        let cpu = f["cpu_ns_per_pkt"].as_f64().unwrap_or(0.0);
        assert!(
            cpu > 0.0 && cpu < 1e6,
            "{server}: implausible CPU per packet {cpu}"
        );
        assert!(
            f["rtt_p50_us"].as_f64().unwrap_or(0.0) > 0.0,
            "{server}: {f}"
        );
    }
}
