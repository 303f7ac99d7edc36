//! In-process groups of placement members on 127.0.0.1: consensus, the KV
//! API through the client, forwarding, ReadIndex, membership changes and the
//! controller. (Process-level failure tests are in core/tests/placement_*.rs.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use robustmq_placement::client::Client;
use robustmq_placement::config::PlacementConfig;
use robustmq_placement::error::ApiError;
use robustmq_placement::keys::NodeRecord;
use robustmq_placement::role::{self, Running};

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("placement-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(addr: SocketAddr, peers: &BTreeMap<u64, SocketAddr>) -> PlacementConfig {
    PlacementConfig {
        addr,
        peers: peers.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        tick_ms: 20,
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_entries: 50,
        log_keep_entries: 10,
        request_timeout_ms: 3000,
        node_timeout_ms: 300,
        fault_injection: true,
        rpc_threads: 1,
    }
}

struct Group {
    dir: PathBuf,
    peers: BTreeMap<u64, SocketAddr>,
    members: BTreeMap<u64, Running>,
}

impl Group {
    fn start(name: &str, n: u64) -> Group {
        init_logs();
        let dir = tempdir(name);
        let peers: BTreeMap<u64, SocketAddr> = (1..=n).map(|i| (i, free_port())).collect();
        let mut g = Group {
            dir,
            peers,
            members: BTreeMap::new(),
        };
        for id in 1..=n {
            g.start_member(id);
        }
        g
    }

    fn start_member(&mut self, id: u64) {
        let cfg = config(self.peers[&id], &self.peers);
        let r = role::start(id, &self.dir.join(id.to_string()), &cfg).unwrap();
        self.members.insert(id, r);
    }

    fn client(&self) -> Client {
        Client::new(
            self.peers.values().map(|a| a.to_string()).collect(),
            Duration::from_secs(5),
        )
    }

    fn client_of(&self, id: u64) -> Client {
        Client::new(vec![self.peers[&id].to_string()], Duration::from_secs(2)).leader_routing(false)
    }
}

/// Waits for a leader that every running member agrees on.
async fn leader(g: &Group, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for id in g.members.keys() {
            if let Ok(st) = g.client_of(*id).status().await {
                seen.push(st.leader_id);
            }
        }
        let agreed = !seen.is_empty() && seen.iter().all(|l| *l == seen[0]);
        if agreed && g.members.contains_key(&seen[0]) {
            return seen[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_serves_kv() {
    let g = Group::start("single", 1);
    leader(&g, Duration::from_secs(5)).await;
    let c = g.client();
    c.kv_set("a", b"1").await.unwrap();
    c.kv_set("ab", b"2").await.unwrap();
    c.kv_set("b", b"3").await.unwrap();
    assert_eq!(c.kv_get("a", false).await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(c.kv_get("zz", false).await.unwrap(), None);
    assert!(c.kv_exists("ab", false).await.unwrap());
    let keys: Vec<_> = c
        .kv_list("a", 0, false)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(keys, vec!["a", "ab"]);
    assert!(c.kv_delete("a").await.unwrap());
    assert!(!c.kv_delete("a").await.unwrap());
    assert!(matches!(
        c.kv_set("", b"x").await,
        Err(ApiError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_forward_and_survive_a_restart() {
    let mut g = Group::start("three", 3);
    let l = leader(&g, Duration::from_secs(5)).await;
    let follower = *g.peers.keys().find(|id| **id != l).unwrap();
    // A write sent to a follower is forwarded to the leader.
    let fc = g.client_of(follower);
    for i in 0..120 {
        fc.kv_set(&format!("k{i}"), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    // Linearizable reads from every member see it.
    for id in 1..=3 {
        let v = g.client_of(id).kv_get("k119", false).await.unwrap();
        assert_eq!(v, Some(b"v119".to_vec()), "member {id}");
    }
    // Stop the leader: another one takes over and has everything.
    g.members.remove(&l).unwrap().stop();
    let l2 = leader(&g, Duration::from_secs(5)).await;
    assert_ne!(l, l2);
    let c = g.client();
    c.kv_set("after", b"x").await.unwrap();
    assert_eq!(c.kv_get("k7", false).await.unwrap(), Some(b"v7".to_vec()));
    // The old leader restarts from disk (its log was compacted) and catches up.
    g.start_member(l);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = g.client_of(l).kv_get("after", true).await;
        if v == Ok(Some(b"x".to_vec())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member did not catch up: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = g.client_of(l).status().await.unwrap();
    assert!(st.snapshot_index > 1, "log was compacted: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_at_runtime() {
    let mut g = Group::start("members", 1);
    leader(&g, Duration::from_secs(5)).await;
    let c = g.client();
    for i in 0..80 {
        c.kv_set(&format!("k{i}"), b"v").await.unwrap();
    }
    // Node 2 starts empty, knowing node 1, and is added.
    let addr2 = free_port();
    g.peers.insert(2, addr2);
    let mut only1 = BTreeMap::new();
    only1.insert(1, g.peers[&1]);
    let cfg = config(addr2, &only1);
    let r = role::start(2, &g.dir.join("2"), &cfg).unwrap();
    g.members.insert(2, r);
    c.member_add(2, &addr2.to_string()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = g.client_of(2).kv_get("k79", true).await;
        if v == Ok(Some(b"v".to_vec())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new member did not catch up: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = c.status().await.unwrap();
    assert_eq!(st.members.len(), 2);
    c.member_remove(2).await.unwrap();
    let st = g.client_of(1).status().await.unwrap();
    assert_eq!(st.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
    c.kv_set("still", b"works").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_marks_silent_nodes_dead() {
    let g = Group::start("controller", 1);
    leader(&g, Duration::from_secs(5)).await;
    let c = g.client();
    let node = |id| NodeRecord {
        node_id: id,
        addr: format!("127.0.0.1:{}", 1000 + id),
        roles: vec!["mqtt".into()],
        registered_ms: 0,
        alive: true,
    };
    c.node_register(node(10)).await.unwrap();
    c.node_register(node(11)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.node_heartbeat(11).await.unwrap();
        let nodes = c.node_list().await.unwrap();
        let alive: Vec<_> = nodes.iter().map(|n| (n.node_id, n.alive)).collect();
        if alive == vec![(10, false), (11, true)] {
            break;
        }
        assert!(Instant::now() < deadline, "liveness not updated: {alive:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        c.node_heartbeat(99).await,
        Err(ApiError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_give_a_one_member_group_on_1228() {
    init_logs();
    let dir = tempdir("defaults");
    let running = match role::start(1, &dir, &PlacementConfig::default()) {
        Ok(r) => r,
        // Another process holds the port: nothing to learn here.
        Err(e) if e.contains("1228") => return,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(running.local_addr(), "127.0.0.1:1228".parse().unwrap());
    let c = Client::new(vec!["127.0.0.1:1228".into()], Duration::from_secs(5));
    c.kv_set("k", b"v").await.unwrap();
    let st = c.status().await.unwrap();
    assert_eq!((st.leader_id, st.members.len()), (1, 1));
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_gets_errors_not_crashes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = Group::start("garbage", 1);
    leader(&g, Duration::from_secs(5)).await;
    let addr = g.peers[&1];
    // An unknown preamble: the connection is dropped.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"HTTP/1.1 GET /\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    // An RPC client sending a frame that is not a request: an error
    // response, and the connection still works afterwards.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = b"RPCL".to_vec();
    robustmq_placement::frame::put_frame(&mut out, b"\xff\xff\xff\xffnot a flatbuffer");
    s.write_all(&out).await.unwrap();
    let mut frame = Vec::new();
    assert!(robustmq_placement::frame::read_frame(&mut s, &mut frame)
        .await
        .unwrap());
    let (_, result) = robustmq_placement::wire::decode_response(&frame).unwrap();
    assert!(
        matches!(result, Err(ApiError::InvalidArgument(_))),
        "{result:?}"
    );
    // A garbage Raft peer: dropped, and the member keeps serving.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = b"RPRF".to_vec();
    out.extend_from_slice(&7u64.to_be_bytes());
    robustmq_placement::frame::put_frame(&mut out, b"\x0a\xff\xff garbage");
    s.write_all(&out).await.unwrap();
    g.client().kv_set("still", b"up").await.unwrap();
    // An oversized frame length is refused without allocating it.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"RPCL\xff\xff\xff\xff").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    assert_eq!(
        g.client().kv_get("still", false).await.unwrap(),
        Some(b"up".to_vec())
    );
}
