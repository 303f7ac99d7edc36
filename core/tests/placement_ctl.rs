//! `robust-ctl` against real placement members: KV commands, exit codes,
//! JSON output, and leader hints (any member's address works).

mod placement_support;

use std::process::Output;
use std::time::Duration;

use placement_support::{ctl, Cluster, Opts};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn ctl_kv_and_status_through_any_member() {
    let c = Cluster::start("ctl", 3, Opts::default());
    let leader = c.wait_leader(Duration::from_secs(15)).expect("a leader");
    let follower = *c.addrs.keys().find(|id| **id != leader).unwrap();
    let f = c.addrs[&follower].to_string();

    let o = ctl(&f, &["kv", "put", "greeting", "hello world"]);
    assert!(o.status.success(), "put: {o:?}");
    let o = ctl(&f, &["kv", "get", "greeting"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "hello world");
    let o = ctl(&f, &["kv", "get", "missing"]);
    assert_eq!(o.status.code(), Some(1), "absent key exits 1: {o:?}");
    ctl(&f, &["kv", "put", "greet2", "x"]);
    let o = ctl(&f, &["--output", "json", "kv", "list", "greet"]);
    assert_eq!(
        stdout(&o),
        r#"[{"key":"greet2","value":"x"},{"key":"greeting","value":"hello world"}]"#
    );
    let o = ctl(&f, &["--output", "json", "cluster", "status"]);
    let json = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(json.contains(&format!("\"leader_id\":{leader}")), "{json}");
    assert!(
        json.contains("\"term\":") && json.contains("\"members\":["),
        "{json}"
    );
    let o = ctl(&f, &["cluster", "status"]);
    assert!(stdout(&o).contains("ADDRESS"), "table output: {o:?}");
    let o = ctl(&f, &["--output", "json", "kv", "delete", "greeting"]);
    assert_eq!(stdout(&o), r#"{"deleted":true,"key":"greeting"}"#);
    assert_eq!(ctl(&f, &["kv", "get", "greeting"]).status.code(), Some(1));
    // Several addresses, the first one dead: the next one answers.
    let dead = placement_support::free_addr().to_string();
    let both = format!("{dead},{f}");
    let o = ctl(&both, &["kv", "get", "greet2"]);
    assert_eq!(stdout(&o), "x", "{o:?}");
    // A member that is not the leader hints at it for leader-only calls.
    let o = ctl(&f, &["cluster", "add-member", "9", "not-an-address"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "invalid argument is an error: {o:?}"
    );
}
