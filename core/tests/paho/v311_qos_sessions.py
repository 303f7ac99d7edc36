"""MQTT 3.1.1 with paho: QoS 0/1/2 both ways across cores, retained
messages, a persistent session that keeps its subscription and queues QoS 1
messages, retransmission with DUP of unacknowledged messages on reconnect,
clean session."""

from common import Client, id_on_core, run


def main(host, port):
    sub = Client(host, port, id_on_core("p3-sub", 0), v5=False)
    assert sub.sub("p3/#", 2) == [2]
    pub = Client(host, port, id_on_core("p3-pub", 1), v5=False)
    for q in (0, 1, 2):
        pub.pub(f"p3/{q}", f"m{q}", q)
        m = sub.msg()
        assert (m.topic, m.payload, m.qos) == (f"p3/{q}", f"m{q}".encode(), q), (m.topic, m.payload, m.qos)

    # Retained: set, replace, clear.
    pub.pub("p3r/a", "one", 1, retain=True)
    pub.pub("p3r/a", "two", 1, retain=True)
    r = Client(host, port, id_on_core("p3-ret", 1), v5=False)
    assert r.sub("p3r/#", 1) == [1]
    m = r.msg()
    assert (m.payload, m.retain) == (b"two", True)
    pub.pub("p3r/a", "", 1, retain=True)
    r2 = Client(host, port, id_on_core("p3-ret2", 0), v5=False)
    r2.sub("p3r/#", 1)
    r2.no_msg()

    # Persistent session, not acknowledging: messages come again with DUP.
    pid = id_on_core("p3-persist", 1)
    p = Client(host, port, pid, v5=False, clean=False, manual_ack=True)
    assert not p.session_present
    assert p.sub("p3p/#", 1) == [1]
    pub.pub("p3p/a", "unacked", 1)
    m = p.msg()
    assert m.payload == b"unacked" and not m.dup
    p.kill()
    pub.pub("p3p/a", "queued-1", 1)
    pub.pub("p3p/a", "queued-2", 1)
    p = Client(host, port, pid, v5=False, clean=False)
    assert p.session_present
    m = p.msg()
    assert (m.payload, m.dup) == (b"unacked", True), (m.payload, m.dup)
    assert p.msg().payload == b"queued-1"
    assert p.msg().payload == b"queued-2"
    p.no_msg()
    p.disconnect()

    # Clean session drops it all.
    pub.pub("p3p/a", "dropped", 1)
    p = Client(host, port, pid, v5=False, clean=True)
    assert not p.session_present
    pub.pub("p3p/a", "no subscription", 1)
    p.no_msg()


run(main)
