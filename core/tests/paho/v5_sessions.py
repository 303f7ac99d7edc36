"""MQTT 5.0 sessions with paho: assigned client identifier, Server Keep
Alive, session expiry, takeover (DISCONNECT 0x8E to the old connection),
a persistent session queueing while offline."""

import time

from common import Client, PacketTypes, code, id_on_core, props, run


def session(expiry):
    return props(PacketTypes.CONNECT, SessionExpiryInterval=expiry)


def main(host, port):
    # An empty client id gets one assigned.
    anon = Client(host, port, "")
    assigned = anon.connack_props.AssignedClientIdentifier
    assert assigned, anon.connack_props
    anon.disconnect()

    # Server Keep Alive: the broker's max_keepalive is 60.
    c = Client(host, port, "p5-ka", keepalive=120)
    assert c.connack_props.ServerKeepAlive == 60, c.connack_props
    c.disconnect()
    c = Client(host, port, "p5-ka2", keepalive=30)
    assert not hasattr(c.connack_props, "ServerKeepAlive"), c.connack_props
    c.disconnect()

    # Session expiry 1 s: there after the disconnect, gone 2 s later.
    c = Client(host, port, "p5-exp", connect_props=session(1))
    c.disconnect()
    c = Client(host, port, "p5-exp", clean=False, connect_props=session(1))
    assert c.session_present
    c.disconnect()
    time.sleep(1.8)
    c = Client(host, port, "p5-exp", clean=False, connect_props=session(1))
    assert not c.session_present
    c.disconnect()

    # Persistent session queues while offline.
    pub = Client(host, port, id_on_core("p5-pub", 0))
    sid = id_on_core("p5-persist", 1)
    s = Client(host, port, sid, connect_props=session(60))
    assert s.sub("p5p/#", 2) == [2]
    s.disconnect()
    for i in range(3):
        pub.pub("p5p/a", f"q{i}", 1 + i % 2)
    s = Client(host, port, sid, clean=False, connect_props=session(60))
    assert s.session_present
    got = [(m.payload, m.qos) for m in (s.msg(), s.msg(), s.msg())]
    # paho hands a QoS 2 message to on_message only at PUBREL, so the
    # callback order can differ from the wire order (checked in Rust).
    assert sorted(got) == [(b"q0", 1), (b"q1", 2), (b"q2", 1)], got

    # Takeover from another connection: the old one is told 0x8E.
    s2 = Client(host, port, sid, clean=False, connect_props=session(60))
    assert s2.session_present
    _, rc, _ = s.wait("disconnect")
    assert code(rc) == 0x8E, rc
    pub.pub("p5p/a", "to-new", 1)
    assert s2.msg().payload == b"to-new"


run(main)
