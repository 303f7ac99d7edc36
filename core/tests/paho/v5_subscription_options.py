"""MQTT 5.0 subscription options with paho: no-local, retain-as-published,
retain handling 0/1/2, subscription identifiers; shared subscriptions with
members on both cores (round robin)."""

from collections import Counter

from common import Client, PacketTypes, SubscribeOptions, id_on_core, props, run


def main(host, port):
    pub = Client(host, port, id_on_core("po-pub", 0))
    pub.pub("po/r", "kept", 1, retain=True)

    s = Client(host, port, id_on_core("po-sub", 1))
    s.sub("po/r", options=SubscribeOptions(qos=1, retainHandling=0))
    assert s.msg().retain
    s.sub("po/r", options=SubscribeOptions(qos=1, retainHandling=0))
    assert s.msg().retain, "retain handling 0: again"
    s.sub("po/+", options=SubscribeOptions(qos=1, retainHandling=1))
    assert s.msg().payload == b"kept"
    s.sub("po/+", options=SubscribeOptions(qos=1, retainHandling=1))
    s.no_msg()
    s.sub("po/#", options=SubscribeOptions(qos=1, retainHandling=2))
    s.no_msg()

    rap = Client(host, port, id_on_core("po-rap", 0))
    rap.sub("po/live", options=SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=2))
    plain = Client(host, port, id_on_core("po-plain", 1))
    plain.sub("po/live", options=SubscribeOptions(qos=1, retainHandling=2))
    pub.pub("po/live", "x", 1, retain=True)
    assert rap.msg().retain
    assert not plain.msg().retain

    me = Client(host, port, id_on_core("po-me", 1))
    me.sub("po/nl", options=SubscribeOptions(qos=1, noLocal=True))
    me.pub("po/nl", "mine", 1)
    me.no_msg()
    pub.pub("po/nl", "theirs", 1)
    assert me.msg().payload == b"theirs"

    ids = Client(host, port, id_on_core("po-ids", 0))
    ids.sub("sid/+", 0, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=5))
    ids.sub("sid/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    pub.pub("sid/a", "both", 1)
    m = ids.msg()
    assert sorted(m.properties.SubscriptionIdentifier) == [5, 7], m.properties
    assert m.qos == 1

    # Shared subscription: 4 members, 2 per core, 40 QoS 1 messages.
    members = [Client(host, port, id_on_core(f"po-share{i}", i % 2)) for i in range(4)]
    for m in members:
        assert m.sub("$share/grp/sh/#", 1) == [1]
    for i in range(40):
        pub.pub("sh/x", str(i), 1)
    got = Counter()
    per = []
    for m in members:
        n = 0
        while True:
            try:
                msg = m.msg(timeout=0.5)
            except AssertionError:
                break
            got[msg.payload] += 1
            n += 1
        per.append(n)
    assert len(got) == 40 and all(v == 1 for v in got.values()), (got, per)
    assert per == [10, 10, 10, 10], per


run(main)
