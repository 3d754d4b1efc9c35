//! Configuration and command-line errors: exit code 2 and one line naming file, key and problem.
mod common;

use common::run_cli;

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    run_cli(dir.path(), &["check-config"])
}

fn assert_one_line_error(stderr: &str, needles: &[&str]) {
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in {stderr:?}");
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

#[test]
fn the_documented_default_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = run_cli(
        dir.path(),
        &[
            "check-config",
            "--config",
            root.join("config.toml").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn no_config_file_means_built_in_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(dir.path(), &["check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("built-in defaults") && out.contains("[::]:8443"),
        "{out}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let (code, _, err) = check("[http]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n");
    assert_eq!(code, 2);
    assert_one_line_error(
        &err,
        &[
            "config.toml",
            "`http.listne`",
            "unknown field `listne`",
            "line 3",
        ],
    );
}

#[test]
fn an_unknown_section_is_refused() {
    let (code, _, err) = check("[htp]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["config.toml", "unknown field `htp`"]);
}

#[test]
fn a_wrong_type_names_the_key() {
    let (code, _, err) = check("[server]\npublic_host = 42\n");
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["config.toml", "`server.public_host`"]);
}

#[test]
fn an_unparsable_address_names_the_key() {
    let (code, _, err) = check("[http]\nlisten = \"localhost:http\"\n");
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["config.toml", "`http.listen`", "line 2"]);
}

#[test]
fn invalid_toml_is_reported_with_its_line() {
    let (code, _, err) = check("[http]\nlisten = \n");
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["config.toml", "line 2"]);
}

#[test]
fn a_missing_certificate_file_names_the_key_and_the_file() {
    let (code, _, err) = check("[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n");
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["`tls.cert`", "missing.pem"]);
}

#[test]
fn a_certificate_file_without_a_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), "not a pem").unwrap();
    std::fs::write(dir.path().join("k.pem"), "not a pem").unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[http]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(dir.path(), &[]);
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["c.pem", "`tls.cert`", "no CERTIFICATE"]);
}

#[test]
fn an_explicit_config_path_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(dir.path(), &["--config", "nope.toml", "check-config"]);
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["nope.toml", "cannot read"]);
}

#[test]
fn a_bad_command_line_exits_2_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(dir.path(), &["--listen", "nowhere"]);
    assert_eq!(code, 2);
    assert!(err.contains("--listen"), "{err}");
    let (code, out, _) = run_cli(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    for option in [
        "--config",
        "--listen",
        "--public-host",
        "--log-level",
        "check-config",
    ] {
        assert!(out.contains(option), "--help mentions {option}");
    }
}

#[test]
fn command_line_overrides_are_validated_too() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(dir.path(), &["--public-host", "a b", "check-config"]);
    assert_eq!(code, 2);
    assert_one_line_error(&err, &["`server.public_host`"]);
    let (code, out, _) = run_cli(dir.path(), &["--listen", "127.0.0.1:9999", "check-config"]);
    assert_eq!(code, 0);
    assert!(out.contains("127.0.0.1:9999"), "{out}");
}

#[test]
fn a_port_in_use_is_one_line_and_exit_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(dir.path(), &["--listen", &addr]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&addr) && err.contains("[http] listen"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}
