"""MQTT 5.0 wills with paho: published when the socket drops, not after a
normal DISCONNECT, after the will delay, cancelled by a reconnect within
the delay; 3.1.1 will on a dropped socket."""

import time

from common import Client, PacketTypes, id_on_core, props, run


def will(payload, delay=None):
    w = {"topic": "pw/will", "payload": payload, "qos": 1, "retain": False}
    if delay is not None:
        w["properties"] = props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay)
    return w


def session(expiry):
    return props(PacketTypes.CONNECT, SessionExpiryInterval=expiry)


def main(host, port):
    watch = Client(host, port, id_on_core("pw-watch", 0))
    assert watch.sub("pw/#", 1) == [1]

    c = Client(host, port, id_on_core("pw-drop", 1), will=will("dropped"))
    c.kill()
    assert watch.msg().payload == b"dropped"

    c = Client(host, port, id_on_core("pw-v3", 1), v5=False, will=will("dropped-v3"))
    c.kill()
    assert watch.msg().payload == b"dropped-v3"

    c = Client(host, port, id_on_core("pw-polite", 1), will=will("never"))
    c.disconnect()
    watch.no_msg()

    # Delay 1 s.
    c = Client(host, port, "pw-delay", will=will("delayed", 1), connect_props=session(30))
    t0 = time.time()
    c.kill()
    watch.no_msg(0.6)
    assert watch.msg().payload == b"delayed"
    # Loose upper bound: the broker checks wills every 200 ms, and CI machines are busy.
    assert time.time() - t0 < 5.0

    # Delay 1 s, reconnect at once: cancelled.
    c = Client(host, port, "pw-cancel", will=will("cancelled", 1), connect_props=session(30))
    c.kill()
    c = Client(host, port, "pw-cancel", clean=False, connect_props=session(30))
    assert c.session_present
    watch.no_msg(1.6)


run(main)
