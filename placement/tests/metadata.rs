//! The metadata API beyond KV on a one-member group: journal shards and
//! segments (sealing driven by the controller), MQTT users, ACL rules,
//! blacklist entries, connector and schema configs, node registration.

use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use robustmq_placement::client::Client;
use robustmq_placement::config::PlacementConfig;
use robustmq_placement::error::ApiError;
use robustmq_placement::keys::SegmentState;
use robustmq_placement::role;
use robustmq_placement::wire::{Call, Reply};
use robustmq_protocol::wire::placement_generated::robustmq::placement as fb;

fn start(name: &str) -> (role::Running, Client) {
    let dir = std::env::temp_dir().join(format!("placement-meta-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = PlacementConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        tick_ms: 20,
        node_timeout_ms: 200,
        ..Default::default()
    };
    let running = role::start(1, &dir, &config).unwrap();
    let client = Client::new(
        vec![running.local_addr().to_string()],
        Duration::from_secs(5),
    );
    (running, client)
}

fn user(name: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let username = Some(fbb.create_string(name));
    let password_hash = Some(fbb.create_string("$argon2id$..."));
    let u = fb::User::create(
        &mut fbb,
        &fb::UserArgs {
            username,
            password_hash,
            superuser: false,
        },
    );
    fbb.finish(u, None);
    fbb.finished_data().to_vec()
}

fn acl(name: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let args = fb::AclRuleArgs {
        name: Some(fbb.create_string(name)),
        username: Some(fbb.create_string("alice")),
        client_id: None,
        topic: Some(fbb.create_string("sensors/#")),
        action: Some(fbb.create_string("publish")),
        allow: true,
    };
    let r = fb::AclRule::create(&mut fbb, &args);
    fbb.finish(r, None);
    fbb.finished_data().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_and_segments_are_sealed_by_the_controller() {
    let (_r, c) = start("segments");
    let create = Call::ShardCreate {
        name: "orders".into(),
        replicas: 3,
    };
    assert_eq!(c.call(create.clone(), false).await.unwrap(), Reply::Empty);
    assert!(matches!(
        c.call(create, false).await,
        Err(ApiError::InvalidArgument(_))
    ));
    let seal = Call::SegmentSeal {
        shard: "orders".into(),
        seq: 0,
        end_offset: 999,
    };
    assert_eq!(c.call(seal, false).await.unwrap(), Reply::Bool(true));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let Reply::Segments(segs) = c
            .call(Call::SegmentList("orders".into()), false)
            .await
            .unwrap()
        else {
            panic!("not segments");
        };
        let states: Vec<_> = segs
            .iter()
            .map(|s| (s.seq, s.status, s.start_offset))
            .collect();
        if states == vec![(0, SegmentState::Sealed, 0), (1, SegmentState::Write, 1000)] {
            break;
        }
        assert!(Instant::now() < deadline, "segment not sealed: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Reply::Shards(shards) = c.call(Call::ShardList("".into()), false).await.unwrap() else {
        panic!("not shards");
    };
    assert_eq!(
        (shards.len(), shards[0].active_segment, shards[0].replicas),
        (1, 1, 3)
    );
    c.call(Call::ShardDelete("orders".into()), false)
        .await
        .unwrap();
    let r = c
        .call(Call::SegmentList("orders".into()), false)
        .await
        .unwrap();
    assert_eq!(r, Reply::Segments(vec![]));
    let bad = Call::ShardCreate {
        name: "a/b".into(),
        replicas: 1,
    };
    assert!(matches!(
        c.call(bad, false).await,
        Err(ApiError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_and_connector_metadata_are_validated_and_stored() {
    let (_r, c) = start("meta");
    let set = |kind: fb::MetaKind, name: &str, value: Vec<u8>| Call::MetaSet {
        kind: kind.0,
        name: name.into(),
        value,
    };
    c.call(set(fb::MetaKind::User, "alice", user("alice")), false)
        .await
        .unwrap();
    c.call(set(fb::MetaKind::User, "bob", user("bob")), false)
        .await
        .unwrap();
    c.call(set(fb::MetaKind::Acl, "r1", acl("r1")), false)
        .await
        .unwrap();
    // The value must be the kind's table, named like the record.
    let wrong_name = c
        .call(set(fb::MetaKind::User, "carol", user("alice")), false)
        .await;
    assert!(matches!(wrong_name, Err(ApiError::InvalidArgument(_))));
    let garbage = c
        .call(set(fb::MetaKind::Acl, "r2", b"junk".to_vec()), false)
        .await;
    assert!(matches!(garbage, Err(ApiError::InvalidArgument(_))));
    let get = Call::MetaGet {
        kind: fb::MetaKind::User.0,
        name: "alice".into(),
    };
    let Reply::Value(Some(bytes)) = c.call(get, false).await.unwrap() else {
        panic!("alice missing");
    };
    let u = flatbuffers::root::<fb::User>(&bytes).unwrap();
    assert_eq!(u.username(), Some("alice"));
    let list = Call::MetaList {
        kind: fb::MetaKind::User.0,
        prefix: "".into(),
    };
    let Reply::Pairs(pairs) = c.call(list, false).await.unwrap() else {
        panic!("not pairs");
    };
    assert_eq!(
        pairs.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        vec!["alice", "bob"]
    );
    // Kinds are separate namespaces.
    let acl_list = Call::MetaList {
        kind: fb::MetaKind::Acl.0,
        prefix: "".into(),
    };
    let Reply::Pairs(acls) = c.call(acl_list, false).await.unwrap() else {
        panic!("not pairs");
    };
    assert_eq!(acls.len(), 1);
    let del = Call::MetaDelete {
        kind: fb::MetaKind::User.0,
        name: "bob".into(),
    };
    assert_eq!(c.call(del, false).await.unwrap(), Reply::Bool(true));
    let unknown = Call::MetaGet {
        kind: 200,
        name: "x".into(),
    };
    assert!(matches!(
        c.call(unknown, false).await,
        Err(ApiError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_and_unregister() {
    let (_r, c) = start("nodes");
    let node = robustmq_placement::keys::NodeRecord {
        node_id: 7,
        addr: "127.0.0.1:1883".into(),
        roles: vec!["mqtt".into(), "journal".into()],
        registered_ms: 0,
        alive: false,
    };
    c.node_register(node).await.unwrap();
    let nodes = c.node_list().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].alive && nodes[0].registered_ms > 0);
    c.node_heartbeat(7).await.unwrap();
    assert_eq!(
        c.call(Call::NodeUnregister(7), false).await.unwrap(),
        Reply::Bool(true)
    );
    assert!(c.node_list().await.unwrap().is_empty());
}
