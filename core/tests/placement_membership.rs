//! Membership changes at runtime on real `robust-server` processes, through
//! `robust-ctl`: a fourth member started empty is added, catches up (through
//! a snapshot: the group's log starts with one), counts in the quorum, and is
//! removed again.

mod placement_support;

use std::time::{Duration, Instant};

use placement_support::{ctl, Cluster, Opts};

fn voters(c: &Cluster, id: u64) -> Vec<u64> {
    let st = c.client_of(id, Duration::from_secs(2)).status().unwrap();
    st.members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect()
}

#[test]
fn a_member_is_added_and_removed_with_robust_ctl() {
    let opts = Opts::default();
    let mut c = Cluster::start("membership", 3, opts);
    let leader = c.wait_leader(Duration::from_secs(15)).expect("a leader");
    let client = c.client(Duration::from_secs(3));
    for i in 0..50 {
        client.kv_set(&format!("k{i}"), b"v").unwrap();
    }
    let follower = *c.addrs.keys().find(|id| **id != leader).unwrap();
    let via = c.addrs[&follower].to_string();

    let addr4 = c.start_joiner(4, opts);
    let o = ctl(&via, &["cluster", "add-member", "4", &addr4.to_string()]);
    assert!(o.status.success(), "add-member: {o:?}");
    let m4 = c.client_of(4, Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(10);
    while m4.kv_get("k49", true).ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "member 4 did not catch up:\n{}",
            c.log_tail(4)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(voters(&c, leader), vec![1, 2, 3, 4]);
    assert_eq!(voters(&c, 4), vec![1, 2, 3, 4]);
    let log4 = std::fs::read_to_string(c.dir.join("node4.log")).unwrap();
    assert!(
        log4.contains("installed snapshot"),
        "member 4 got no snapshot"
    );

    // With four voters, one member down still leaves a quorum of three.
    c.kill(follower);
    client.kv_set("with4", b"yes").unwrap();
    assert_eq!(
        m4.kv_get("with4", false).unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    c.spawn(follower);

    let o = ctl(
        &c.addrs[&leader].to_string(),
        &["cluster", "remove-member", "4"],
    );
    assert!(o.status.success(), "remove-member: {o:?}");
    assert_eq!(voters(&c, leader), vec![1, 2, 3]);
    c.kill(4);
    client.kv_set("after-removal", b"ok").unwrap();
}
