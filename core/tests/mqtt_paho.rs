//! The broker driven by paho-mqtt 2.x (Python): each script under
//! `core/tests/paho/` runs as `python3 SCRIPT HOST PORT` against its own
//! broker (2 cores, `max_keepalive = 60`, `$SYS` every second, the ACL
//! example of the issue plus a denied publish topic) and must exit 0.

mod mqtt_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mqtt_support::*;

fn run_script(name: &str) {
    let b = BrokerConfig::default()
        .mqtt("max_keepalive = 60")
        .mqtt("sys_interval_secs = 1")
        .tail(
            "[[mqtt.acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"test/nosubscribe\"\n\
             [[mqtt.acl]]\npermission = \"deny\"\naction = \"publish\"\ntopic = \"test/nopublish\"\n",
        )
        .start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paho");
    let (status, out, err) = run_with_timeout(
        Command::new("python3")
            .arg(dir.join(name))
            .args(["127.0.0.1", &b.port.to_string()])
            .current_dir(&dir)
            .env("PYTHONUNBUFFERED", "1"),
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "{name} failed ({status:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
}

#[test]
fn paho_v311_qos_sessions() {
    run_script("v311_qos_sessions.py");
}

#[test]
fn paho_v5_request_response() {
    run_script("v5_request_response.py");
}

#[test]
fn paho_v5_sessions() {
    run_script("v5_sessions.py");
}

#[test]
fn paho_v5_will() {
    run_script("v5_will.py");
}

#[test]
fn paho_v5_subscription_options() {
    run_script("v5_subscription_options.py");
}

#[test]
fn paho_acl_sys() {
    run_script("acl_sys.py");
}

#[test]
fn paho_moves_under_churn() {
    run_script("moves_under_churn.py");
}
