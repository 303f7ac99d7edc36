//! Property tests of the MQTT codec.
//!
//! - Every packet of every version, generated with valid contents, encodes
//!   to `encoded_len` bytes and decodes back to itself, alone and in a
//!   stream cut into arbitrary chunks.
//! - Random byte strings and mutations of valid encodings (bit flips,
//!   truncations, inserted, removed and overwritten bytes) never panic the
//!   decoder, server side or with a known version; whatever they decode to
//!   re-encodes and decodes back to itself.
//! - The decoder refuses an oversized packet from its fixed header alone,
//!   allocating nothing, and decoding `n` bytes allocates at most a bounded
//!   multiple of `n` (measured with the counting allocator below).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::prelude::*;
use proptest::sample::select;
use robustmq_protocol::mqtt::*;
use robustmq_protocol::topic;

use ProtocolVersion::{V3_1, V3_1_1, V5};

// ---------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------

/// Wraps the system allocator and adds the size of every allocation (and
/// the new size of every reallocation) made by a thread that has switched
/// counting on to `ALLOCATED`. Counting is switched per thread so that the
/// other tests of this file, running on other threads, do not disturb a
/// measurement.
struct CountingAlloc;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and no destructor: reading it never allocates, so the
    // allocator may use it.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    // `try_with`: the thread-local may be gone while the thread exits.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATED.fetch_add(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System` upholds the `GlobalAlloc` contract (layouts,
// alignment, pointers from this allocator); the only addition is an atomic
// add and a read of a const-initialised thread-local `Cell`, neither of
// which allocates, unwinds or touches the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result and the bytes this thread allocated.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.store(0, Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATED.load(Ordering::Relaxed))
}

/// Only one measurement at a time (the counter is shared).
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

// ---------------------------------------------------------------------------
// Strategies: valid packets
// ---------------------------------------------------------------------------

const VERSIONS: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

/// A string MQTT accepts: any characters but U+0000. Mostly short ASCII,
/// sometimes any Unicode scalar value.
fn string() -> impl Strategy<Value = ByteString> {
    prop_oneof![
        3 => "[a-z0-9/ _-]{0,8}",
        1 => "[^\u{0}]{0,6}",
    ]
    .prop_map(ByteString::from)
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// One level of a topic name: no wildcards, no separator, no NUL.
fn name_level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_$-]{0,5}",
        1 => "[^\u{0}+#/]{0,3}",
    ]
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    prop::collection::vec(name_level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a valid topic name", |t| {
            topic::validate_topic_name(t).is_ok()
        })
        .prop_map(ByteString::from)
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    let level = prop_oneof![3 => name_level(), 1 => Just("+".to_string())];
    let plain = (prop::collection::vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
        let mut filter = levels.join("/");
        if hash {
            filter.push_str("/#");
        }
        filter
    });
    let plain = prop_oneof![8 => plain, 1 => Just("#".to_string())];
    let shared = ("[a-z0-9]{1,4}", plain.clone()).prop_map(|(g, f)| format!("$share/{g}/{f}"));
    prop_oneof![5 => plain, 1 => shared]
        .prop_filter("a valid filter", |f| {
            topic::validate_subscription(f).is_ok()
        })
        .prop_map(ByteString::from)
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    prop::option::of(0..=1u8)
}

/// Every property, each present with probability one half, with values in
/// range; [`restrict`] then keeps only those allowed where they are used.
fn any_properties() -> impl Strategy<Value = Properties> {
    use prop::option::of;
    let publishing = (
        flag(),
        of(any::<u32>()),
        of(string()),
        of(topic_name()),
        of(binary(8)),
        prop::collection::vec(1..=MAX_SUBSCRIPTION_IDENTIFIER, 0..3),
        of(any::<u32>()),
        of(string()),
        of(any::<u16>()),
    );
    let auth = (
        of(string()),
        of(binary(8)),
        flag(),
        of(any::<u32>()),
        flag(),
        of(string()),
        of(string()),
        of(string()),
    );
    let limits = (
        of(1..=u16::MAX),
        of(any::<u16>()),
        of(1..=u16::MAX),
        flag(),
        flag(),
        prop::collection::vec((string(), string()), 0..3),
        of(1..=u32::MAX),
        flag(),
        flag(),
        flag(),
    );
    (publishing, auth, limits).prop_map(|(p, a, l)| {
        PropertyValues {
            payload_format_indicator: p.0,
            message_expiry_interval: p.1,
            content_type: p.2,
            response_topic: p.3,
            correlation_data: p.4,
            subscription_identifiers: p.5,
            session_expiry_interval: p.6,
            assigned_client_identifier: p.7,
            server_keep_alive: p.8,
            authentication_method: a.0,
            authentication_data: a.1,
            request_problem_information: a.2,
            will_delay_interval: a.3,
            request_response_information: a.4,
            response_information: a.5,
            server_reference: a.6,
            reason_string: a.7,
            receive_maximum: l.0,
            topic_alias_maximum: l.1,
            topic_alias: l.2,
            maximum_qos: l.3,
            retain_available: l.4,
            user_properties: l.5,
            maximum_packet_size: l.6,
            wildcard_subscription_available: l.7,
            subscription_identifier_available: l.8,
            shared_subscription_available: l.9,
        }
        .into()
    })
}

/// Clears every property that `ctx` may not carry, and keeps at most one
/// subscription identifier outside PUBLISH.
fn restrict(mut p: Properties, ctx: PropertyContext) -> Properties {
    use PropertyId::*;
    fn keep<T>(v: &mut Option<T>, id: PropertyId, ctx: PropertyContext) {
        if !id.is_allowed_in(ctx) {
            *v = None;
        }
    }
    keep(&mut p.payload_format_indicator, PayloadFormatIndicator, ctx);
    keep(&mut p.message_expiry_interval, MessageExpiryInterval, ctx);
    keep(&mut p.content_type, ContentType, ctx);
    keep(&mut p.response_topic, ResponseTopic, ctx);
    keep(&mut p.correlation_data, CorrelationData, ctx);
    if !SubscriptionIdentifier.is_allowed_in(ctx) {
        p.subscription_identifiers.clear();
    } else if ctx != PropertyContext::Packet(PacketType::Publish) {
        p.subscription_identifiers.truncate(1);
    }
    keep(&mut p.session_expiry_interval, SessionExpiryInterval, ctx);
    keep(
        &mut p.assigned_client_identifier,
        AssignedClientIdentifier,
        ctx,
    );
    keep(&mut p.server_keep_alive, ServerKeepAlive, ctx);
    keep(&mut p.authentication_method, AuthenticationMethod, ctx);
    keep(&mut p.authentication_data, AuthenticationData, ctx);
    keep(
        &mut p.request_problem_information,
        RequestProblemInformation,
        ctx,
    );
    keep(&mut p.will_delay_interval, WillDelayInterval, ctx);
    keep(
        &mut p.request_response_information,
        RequestResponseInformation,
        ctx,
    );
    keep(&mut p.response_information, ResponseInformation, ctx);
    keep(&mut p.server_reference, ServerReference, ctx);
    keep(&mut p.reason_string, ReasonString, ctx);
    keep(&mut p.receive_maximum, ReceiveMaximum, ctx);
    keep(&mut p.topic_alias_maximum, TopicAliasMaximum, ctx);
    keep(&mut p.topic_alias, TopicAlias, ctx);
    keep(&mut p.maximum_qos, MaximumQoS, ctx);
    keep(&mut p.retain_available, RetainAvailable, ctx);
    if !UserProperty.is_allowed_in(ctx) {
        p.user_properties.clear();
    }
    keep(&mut p.maximum_packet_size, MaximumPacketSize, ctx);
    keep(
        &mut p.wildcard_subscription_available,
        WildcardSubscriptionAvailable,
        ctx,
    );
    keep(
        &mut p.subscription_identifier_available,
        SubscriptionIdentifierAvailable,
        ctx,
    );
    keep(
        &mut p.shared_subscription_available,
        SharedSubscriptionAvailable,
        ctx,
    );
    p
}

/// Properties for `ctx` in 5.0; none in 3.x.
fn properties(v: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        prop_oneof![
            1 => Just(Properties::default()),
            3 => any_properties().prop_map(move |p| restrict(p, ctx)),
        ]
        .boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn packet_props(v: ProtocolVersion, t: PacketType) -> BoxedStrategy<Properties> {
    properties(v, PropertyContext::Packet(t))
}

/// The 5.0 reason codes valid in `t`.
fn reason_codes_for(t: PacketType) -> Vec<ReasonCode> {
    (0..=u8::MAX)
        .map(ReasonCode)
        .filter(|c| c.is_valid_for(t))
        .collect()
}

/// The reason codes `t` can carry in `v`: all of 5.0's, or in 3.x only
/// success (the field is not on the wire).
fn reason(v: ProtocolVersion, t: PacketType) -> BoxedStrategy<ReasonCode> {
    if v.is_v5() {
        select(reason_codes_for(t)).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    }
}

/// A payload format indicator of 1 promises UTF-8: drop the promise when
/// the payload is not.
fn fix_payload_format(props: &mut Properties, payload: &[u8]) {
    if props.payload_format_indicator == Some(1) && std::str::from_utf8(payload).is_err() {
        props.payload_format_indicator = Some(0);
    }
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        2 => binary(16),
        1 => "[^\u{0}]{0,8}".prop_map(Bytes::from),
    ]
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        payload(),
        qos(),
        any::<bool>(),
        properties(v, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, mut properties)| {
            fix_payload_format(&mut properties, &payload);
            LastWill {
                topic,
                payload,
                qos,
                retain,
                properties,
            }
        });
    (
        any::<bool>(),
        any::<u16>(),
        packet_props(v, PacketType::Connect),
        string(),
        prop::option::of(will),
        prop::option::of(string()),
        prop::option::of(binary(8)),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // 3.x forbids a password without a user name.
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() {
        select(reason_codes_for(PacketType::ConnAck)).boxed()
    } else {
        (0..=5u8)
            .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap())
            .boxed()
    };
    (any::<bool>(), code, packet_props(v, PacketType::ConnAck)).prop_map(
        |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        packet_props(v, PacketType::Publish),
        payload(),
        any::<bool>(),
    )
        .prop_map(
            |(dup, qos, retain, topic, id, mut properties, payload, aliased)| {
                fix_payload_format(&mut properties, &payload);
                // In 5.0 a topic alias may stand for an empty topic name.
                let topic = if aliased && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { 0 } else { id },
                    properties,
                    payload,
                })
            },
        )
}

fn pub_reply(v: ProtocolVersion, t: PacketType) -> impl Strategy<Value = Packet> {
    (packet_id(), reason(v, t), packet_props(v, t)).prop_map(
        move |(packet_id, reason_code, properties)| {
            let r = PubReply {
                packet_id,
                reason_code,
                properties,
            };
            match t {
                PacketType::PubAck => Packet::PubAck(r),
                PacketType::PubRec => Packet::PubRec(r),
                PacketType::PubRel => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        },
    )
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendAtSubscribeIfNew,
            RetainHandling::DoNotSend,
        ]),
    );
    let filter = (topic_filter(), options).prop_map(
        move |(filter, (qos, no_local, retain_as_published, retain_handling))| {
            let options = if v.is_v5() {
                let shared = topic::parse_shared(&filter).unwrap().is_some();
                SubscriptionOptions {
                    qos,
                    // No Local on a shared subscription is a protocol error.
                    no_local: no_local && !shared,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            };
            SubscribeFilter { filter, options }
        },
    );
    (
        packet_id(),
        packet_props(v, PacketType::Subscribe),
        prop::collection::vec(filter, 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() {
        reason_codes_for(PacketType::SubAck)
    } else {
        vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::UNSPECIFIED_ERROR,
        ]
    };
    (
        packet_id(),
        packet_props(v, PacketType::SubAck),
        prop::collection::vec(select(codes), 1..6),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        packet_props(v, PacketType::Unsubscribe),
        prop::collection::vec(topic_filter(), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // 3.x UNSUBACK carries no reason codes; 5.0 one per filter.
    let codes = if v.is_v5() {
        prop::collection::vec(select(reason_codes_for(PacketType::UnsubAck)), 1..6).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), packet_props(v, PacketType::UnsubAck), codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        },
    )
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        reason(v, PacketType::Disconnect),
        packet_props(v, PacketType::Disconnect),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(V5, PacketType::Auth),
        packet_props(V5, PacketType::Auth),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
}

/// Any valid packet of version `v`: all 15 types in 5.0, AUTH excepted in
/// 3.x.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut arms: Vec<BoxedStrategy<Packet>> = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        pub_reply(v, PacketType::PubAck).boxed(),
        pub_reply(v, PacketType::PubRec).boxed(),
        pub_reply(v, PacketType::PubRel).boxed(),
        pub_reply(v, PacketType::PubComp).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        arms.push(auth().boxed());
    }
    prop::strategy::Union::new(arms).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(VERSIONS.to_vec())
}

/// A version and a packet of it.
fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const MAX: usize = 1 << 20;

fn encode(v: ProtocolVersion, packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(v, &mut buf).expect("a valid packet encodes");
    buf
}

/// A CONNECT of version `v`, to open a server-side stream.
fn hello(v: ProtocolVersion) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: v,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::default(),
        client_id: ByteString::from_static("c"),
        will: None,
        username: None,
        password: None,
    }))
}

/// Every decoder a connection can have: server side (version learnt from
/// CONNECT) and one per known version.
fn decoders(max: usize) -> Vec<Decoder> {
    let mut all = vec![Decoder::new(max)];
    all.extend(VERSIONS.iter().map(|&v| Decoder::with_version(v, max)));
    all
}

/// Decodes packets from `bytes` until the decoder wants more or fails.
/// Checks that `Ok(None)` leaves the buffer as it was and that every packet
/// decoded re-encodes to `encoded_len` bytes that decode back to it.
fn drain(mut decoder: Decoder, bytes: &[u8]) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a packet consumes bytes");
                out.push(packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "incomplete leaves the buffer alone");
                break;
            }
            Err(e) => {
                // Every error maps to a reason code (does not panic).
                let _ = e.reason_code();
                break;
            }
        }
    }
    for packet in &out {
        re_encode(&decoder, packet);
    }
    out
}

/// Re-encodes a decoded packet for the decoder's version and decodes it
/// again.
fn re_encode(decoder: &Decoder, packet: &Packet) {
    let (v, mut again) = match packet {
        Packet::Connect(c) => (c.protocol, Decoder::new(MAX_REMAINING_LENGTH + 5)),
        _ => {
            let v = decoder.version().expect("a version after CONNECT");
            (v, Decoder::with_version(v, MAX_REMAINING_LENGTH + 5))
        }
    };
    let mut buf = encode(v, packet);
    assert_eq!(buf.len(), packet.encoded_len(v));
    let decoded = again.decode(&mut buf).expect("re-encoding decodes");
    assert_eq!(
        decoded.as_ref(),
        Some(packet),
        "round trip of a decoded packet"
    );
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------
// Round trips of valid packets
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_packet_round_trips((v, packet) in versioned_packet()) {
        let mut buf = encode(v, &packet);
        prop_assert_eq!(buf.len(), packet.encoded_len(v));
        prop_assert_eq!(
            packet.remaining_len(v) + 1 + varint_len(packet.remaining_len(v)),
            buf.len()
        );
        let mut decoder = match packet {
            Packet::Connect(_) => Decoder::new(MAX),
            _ => Decoder::with_version(v, MAX),
        };
        let decoded = decoder.decode(&mut buf).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&packet));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoder.version(), Some(v));
    }

    #[test]
    fn streams_decode_in_any_chunks(
        (v, packets) in version().prop_flat_map(|v| {
            (Just(v), prop::collection::vec(packet(v), 1..6))
        }),
        chunk in 1..64usize,
    ) {
        let mut wire = encode(v, &hello(v));
        for p in &packets {
            p.encode(v, &mut wire).unwrap();
        }
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(p) = decoder.decode(&mut buf).unwrap() {
                out.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out.len(), packets.len() + 1);
        prop_assert_eq!(&out[0], &hello(v));
        prop_assert_eq!(&out[1..], &packets[..]);
    }

    #[test]
    fn publish_from_parts_encodes_as_the_packet(
        (v, packet) in version().prop_flat_map(|v| (Just(v), publish(v))),
        expiry in prop::option::of(any::<u32>()),
        ids in prop::collection::vec(1..=268_435_455u32, 0..4),
        alias in prop::option::of(1..=u16::MAX),
    ) {
        // What a broker sends each subscriber: the message's properties
        // with its own expiry, subscription identifiers and alias.
        let Packet::Publish(p) = packet else { unreachable!() };
        let parts = PublishRef {
            overrides: PublishOverrides {
                message_expiry_interval: expiry,
                subscription_identifiers: &ids,
                topic_alias: alias,
            },
            ..PublishRef::from_publish(&p)
        };
        let mut whole = p.clone();
        whole.properties.message_expiry_interval = expiry;
        whole.properties.subscription_identifiers = ids.clone();
        whole.properties.topic_alias = alias;
        let expected = encode(v, &Packet::Publish(whole));
        let mut buf = BytesMut::new();
        parts.encode(v, &mut buf).unwrap();
        prop_assert_eq!(parts.encoded_len(v), buf.len());
        prop_assert_eq!(buf, expected);
    }

    #[test]
    fn replies_without_properties_encode_as_the_packet(
        v in version(),
        kind in select(vec![PacketType::PubAck, PacketType::PubRec, PacketType::PubRel, PacketType::PubComp]),
        packet_id in packet_id(),
        reason in select(vec![ReasonCode::SUCCESS, ReasonCode::NO_MATCHING_SUBSCRIBERS, ReasonCode::UNSPECIFIED_ERROR, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND]),
    ) {
        let r = PubReply { packet_id, reason_code: reason, properties: Properties::default() };
        let packet = match kind {
            PacketType::PubAck => Packet::PubAck(r),
            PacketType::PubRec => Packet::PubRec(r),
            PacketType::PubRel => Packet::PubRel(r),
            _ => Packet::PubComp(r),
        };
        let mut buf = BytesMut::new();
        encode_reply(kind, packet_id, reason, v, &mut buf);
        prop_assert_eq!(buf, encode(v, &packet));
    }

    #[test]
    fn v3_packets_ignore_v5_only_fields(packet in packet(V5)) {
        // Encoding a 5.0 packet for 3.1.1 drops properties and reason codes:
        // it still decodes, and encodes the same as what it decodes to.
        if matches!(packet, Packet::Auth(_)) {
            prop_assert_eq!(
                packet.encode(V3_1_1, &mut BytesMut::new()),
                Err(EncodeError::NotInVersion(PacketType::Auth, V3_1_1))
            );
            return Ok(());
        }
        let mut buf = encode(V3_1_1, &packet);
        prop_assert_eq!(buf.len(), packet.encoded_len(V3_1_1));
        let decoder = match &packet {
            Packet::Connect(_) => Decoder::new(MAX),
            _ => Decoder::with_version(V3_1_1, MAX),
        };
        let mut decoder = decoder;
        // A 5.0 PUBLISH with an aliased empty topic, or a will / CONNECT
        // that keeps its own protocol, may not be valid 3.1.1: only require
        // that whatever decodes round-trips.
        if let Ok(Some(p)) = decoder.decode(&mut buf) {
            re_encode(&decoder, &p);
        }
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

// ---------------------------------------------------------------------------
// Robustness: random and mutated input never panics
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
    Overwrite(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match *m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[i % len] ^= 1 << bit,
        Mutation::Truncate(n) => bytes.truncate(n % (len + 1)),
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Remove(i) if len > 0 => {
            bytes.remove(i % len);
        }
        Mutation::Overwrite(i, b) if len > 0 => bytes[i % len] = b,
        _ => {}
    }
}

/// A valid stream (CONNECT then packets) of one version, then mutated.
fn mutated_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        version().prop_flat_map(|v| (Just(v), prop::collection::vec(packet(v), 1..4))),
        prop::collection::vec(mutation(), 1..4),
    )
        .prop_map(|((v, packets), mutations)| {
            let mut wire = encode(v, &hello(v));
            for p in &packets {
                p.encode(v, &mut wire).unwrap();
            }
            let mut bytes = wire.to_vec();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            bytes
        })
}

/// Random bytes with a plausible start: a packet type nibble and a small
/// remaining length, so the decoder gets past the fixed header.
fn random_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..128),
            any::<bool>()
        )
            .prop_map(|(first, body, exact)| {
                let len = if exact { body.len() } else { body.len() / 2 };
                let mut bytes = vec![first];
                let mut rl = BytesMut::new();
                let mut v = len;
                loop {
                    let mut b = (v & 0x7F) as u8;
                    v >>= 7;
                    if v > 0 {
                        b |= 0x80;
                    }
                    rl.extend_from_slice(&[b]);
                    if v == 0 {
                        break;
                    }
                }
                bytes.extend_from_slice(&rl);
                bytes.extend_from_slice(&body);
                bytes
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_bytes_never_panic(bytes in random_input()) {
        for d in decoders(MAX) {
            drain(d, &bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(bytes in mutated_stream()) {
        for d in decoders(MAX) {
            drain(d, &bytes);
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        (v, packet) in versioned_packet(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = encode(v, &packet).to_vec();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        for d in decoders(MAX) {
            drain(d, &bytes);
        }
    }
}

// ---------------------------------------------------------------------------
// The size limit and allocation
// ---------------------------------------------------------------------------

/// The fixed header of a packet with this first byte and remaining length.
fn fixed_header(first: u8, remaining: usize) -> Vec<u8> {
    let mut out = vec![first];
    let mut v = remaining;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return out;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) A fixed header announcing more than the maximum is refused from
    /// the header bytes alone, with nothing allocated and nothing consumed.
    #[test]
    fn oversized_packet_refused_from_its_header(
        first in 0x10..=0xFFu8,
        (max, remaining) in (2..=(1usize << 20)).prop_flat_map(|max| {
            // header_len >= 2, so remaining >= max - 1 is over the limit.
            (Just(max), (max - 1)..=MAX_REMAINING_LENGTH)
        }),
    ) {
        let header = fixed_header(first, remaining);
        let size = header.len() + remaining;
        for mut d in decoders(max) {
            let mut buf = BytesMut::from(&header[..]);
            let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
            let (result, allocated) = measure(|| d.decode(&mut buf));
            prop_assert_eq!(result, Err(DecodeError::PacketTooLarge { size, max }));
            prop_assert_eq!(allocated, 0);
            prop_assert_eq!(buf.len(), header.len());
            prop_assert_eq!(
                parse_fixed_header(&header, max),
                Err(DecodeError::PacketTooLarge { size, max })
            );
        }
    }

    /// A fixed header still incomplete is `Ok(None)`, allocating nothing.
    #[test]
    fn partial_header_allocates_nothing(first in 0x10..=0xFFu8, remaining in 128..=MAX_REMAINING_LENGTH) {
        let header = fixed_header(first, remaining);
        for cut in 1..header.len() {
            for mut d in decoders(MAX) {
                let mut buf = BytesMut::from(&header[..cut]);
                let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
                let (result, allocated) = measure(|| d.decode(&mut buf));
                prop_assert_eq!(result, Ok(None));
                prop_assert_eq!(allocated, 0);
            }
        }
    }
}

/// Bytes allocated while `decoder` drains `bytes` (the input buffer itself
/// is made before counting starts).
fn allocated_by_decoding(mut decoder: Decoder, bytes: &[u8]) -> usize {
    let mut buf = BytesMut::from(bytes);
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // Packets are dropped as they come: a `Vec` of them would count too.
    let ((), allocated) = measure(|| while let Ok(Some(_)) = decoder.decode(&mut buf) {});
    allocated
}

/// (b) The allocation bound: decoding `n` bytes allocates at most
/// `ALLOC_PER_BYTE * n + ALLOC_CONSTANT` bytes, counted as the sum of every
/// allocation's size and every reallocation's new size (an over-estimate of
/// what is live at any moment).
///
/// Where the bytes go: strings and payloads are slices of the input and
/// allocate nothing; the first `split_to` of a `Vec`-backed `BytesMut`
/// allocates its shared header (40 bytes, once per buffer). What grows with
/// `n`:
/// - a boxed `Connect` (976 bytes) per CONNECT, and the smallest CONNECT is
///   14 bytes: 976 / 14 ≈ 70 bytes per input byte, the worst case;
/// - the vectors, grown by doubling, which counted this way allocate up to
///   4 times their final length in elements: user properties (64 bytes an
///   element for 5 wire bytes: 64 / 5 * 4 ≈ 51), UNSUBSCRIBE filters
///   (32 bytes for 3: ≈ 43), SUBSCRIBE filters (40 bytes for 4: 40),
///   subscription identifiers (4 for 2: 8); SUBACK reason codes are
///   allocated once at their exact size (1 byte each).
///
/// Measured by `worst_case_allocation_is_within_the_bound` (it prints the
/// ratios; `cargo test --test codec_proptest worst -- --nocapture`): 69.7
/// per byte for a stream of smallest CONNECTs, 51.2 for user properties
/// just past a power of two, 42.7 UNSUBSCRIBE, 40.0 SUBSCRIBE; random and
/// mutated input stays far below. The constant covers one CONNECT and the
/// header of a short input (1,016 bytes for a 16-byte CONNECT). 96 per byte
/// leaves a margin of about 1.4 over the worst measured ratio.
const ALLOC_PER_BYTE: usize = 96;
const ALLOC_CONSTANT: usize = 4096;

fn within_bound(n: usize, allocated: usize) -> bool {
    allocated <= ALLOC_PER_BYTE * n + ALLOC_CONSTANT
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_allocates_in_proportion_to_input(
        bytes in prop_oneof![random_input(), mutated_stream()],
    ) {
        for d in decoders(MAX) {
            let allocated = allocated_by_decoding(d, &bytes);
            prop_assert!(
                within_bound(bytes.len(), allocated),
                "{} bytes allocated decoding {} bytes",
                allocated,
                bytes.len()
            );
        }
    }

    #[test]
    fn decoding_valid_streams_allocates_in_proportion(
        (v, packets) in version().prop_flat_map(|v| {
            (Just(v), prop::collection::vec(packet(v), 1..6))
        }),
    ) {
        let mut wire = encode(v, &hello(v));
        for p in &packets {
            p.encode(v, &mut wire).unwrap();
        }
        for d in decoders(MAX) {
            let allocated = allocated_by_decoding(d, &wire);
            prop_assert!(within_bound(wire.len(), allocated), "{} allocated for {} bytes", allocated, wire.len());
        }
    }
}

/// Streams built to allocate as much as possible per input byte: one
/// packet holding `count` of the smallest element of each vector the
/// decoder fills, or `count` of the smallest CONNECT (one boxed `Connect`
/// each), every stream opened by a CONNECT so the server-side decoder
/// reaches it.
fn worst_cases(count: usize) -> Vec<(&'static str, ProtocolVersion, Vec<Packet>)> {
    let a = ByteString::from_static("a");
    let empty = ByteString::new();
    let min_connect = Packet::Connect(Box::new(Connect {
        protocol: V3_1_1,
        clean_start: false,
        keep_alive: 0,
        properties: Properties::default(),
        client_id: ByteString::new(),
        will: None,
        username: None,
        password: None,
    }));
    vec![
        (
            "UNSUBSCRIBE of one-letter filters",
            V3_1_1,
            vec![Packet::Unsubscribe(Unsubscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: vec![a.clone(); count],
            })],
        ),
        (
            "SUBSCRIBE of one-letter filters",
            V3_1_1,
            vec![Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: vec![
                    SubscribeFilter {
                        filter: a.clone(),
                        options: SubscriptionOptions::default(),
                    };
                    count
                ],
            })],
        ),
        (
            "PUBLISH with empty user properties",
            V5,
            vec![Packet::Publish(Publish {
                topic: a.clone(),
                properties: PropertyValues {
                    user_properties: vec![(empty.clone(), empty.clone()); count],
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })],
        ),
        (
            "PUBLISH with subscription identifiers",
            V5,
            vec![Packet::Publish(Publish {
                topic: a.clone(),
                properties: PropertyValues {
                    subscription_identifiers: vec![1; count],
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })],
        ),
        (
            "SUBACK of reason codes",
            V3_1_1,
            vec![Packet::SubAck(SubAck {
                packet_id: 1,
                properties: Properties::default(),
                reason_codes: vec![ReasonCode::GRANTED_QOS_1; count],
            })],
        ),
        (
            "smallest CONNECTs (14 bytes each)",
            V3_1_1,
            vec![min_connect; count.min(2000)],
        ),
        ("PINGREQs", V3_1_1, vec![Packet::PingReq; count.min(2000)]),
    ]
}

#[test]
fn worst_case_allocation_is_within_the_bound() {
    println!(
        "size_of Connect {}, Packet {}, Properties {}",
        std::mem::size_of::<Connect>(),
        std::mem::size_of::<Packet>(),
        std::mem::size_of::<Properties>()
    );
    let mut worst = 0f64;
    // Just past a power of two is the worst moment of a doubling `Vec`.
    for count in [1, 10, 1000, 1025, 8193] {
        for (name, v, packets) in worst_cases(count) {
            let mut wire = encode(v, &hello(v));
            for p in &packets {
                p.encode(v, &mut wire).unwrap();
            }
            for d in [Decoder::new(MAX), Decoder::with_version(v, MAX)] {
                let allocated = allocated_by_decoding(d, &wire);
                let n = wire.len();
                let ratio = allocated as f64 / n as f64;
                if n > 1000 {
                    worst = worst.max(ratio);
                }
                println!(
                    "{name} x{count}: {n} bytes in, {allocated} allocated ({ratio:.1} per byte)"
                );
                assert!(within_bound(n, allocated), "{name} x{count}");
            }
        }
    }
    println!("worst ratio over inputs above 1000 bytes: {worst:.1}");
}

/// The packet strategies cover every packet type of each version: all 15
/// in 5.0, all but AUTH in 3.x.
#[test]
fn strategies_cover_every_packet_type() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    for v in VERSIONS {
        let mut runner = TestRunner::deterministic();
        let strategy = packet(v);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let p = strategy.new_tree(&mut runner).unwrap().current();
            seen.insert(p.packet_type() as u8);
        }
        let expected: std::collections::HashSet<u8> = if v.is_v5() {
            (1..=15).collect()
        } else {
            (1..=14).collect()
        };
        assert_eq!(seen, expected, "{v:?}");
    }
}
