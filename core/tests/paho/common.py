"""Helpers of the paho-mqtt (2.x) test scripts: a synchronous client
wrapper whose callbacks feed a queue, with bounded waits.

Each script runs as `python3 SCRIPT HOST PORT` against a broker started by
core/tests/mqtt_paho.rs and exits 0 when every assertion holds."""

import queue
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 5.0
QUIET = 0.4
CORES = 2


def args():
    return sys.argv[1], int(sys.argv[2])


def fnv1a(data: bytes) -> int:
    """The broker's owner hash: FNV-1a, then MurmurHash3's finalizer."""
    m = 0xFFFFFFFFFFFFFFFF
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & m
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    return h ^ (h >> 33)


# The same value as the broker's unit test `the_owner_hash_of_a_known_id`.
assert fnv1a(b"robustmq") == 0x8DC8B19F678AF3AC


def id_on_core(prefix: str, core: int) -> str:
    """A client id owned by `core` (the broker's hash of it % cores)."""
    i = 0
    while True:
        cid = f"{prefix}-{i}"
        if fnv1a(cid.encode()) % CORES == core:
            return cid
        i += 1


def props(packet_type, **values):
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def code(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


class Client:
    """A paho client driven by its own loop thread (no automatic reconnect)."""

    def __init__(self, host, port, cid, v5=True, clean=True, connect_props=None,
                 will=None, manual_ack=False, keepalive=60):
        self.v5 = v5
        self.events = queue.Queue()
        self.kept = []
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kw = {} if v5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=proto, manual_ack=manual_ack, **kw)
        c = self.c
        c.on_connect = lambda cl, u, flags, rc, p: self.events.put(("connack", flags, rc, p))
        c.on_message = lambda cl, u, m: self.events.put(("msg", m))
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.events.put(("suback", mid, rcs, p))
        c.on_unsubscribe = lambda cl, u, mid, rcs, p: self.events.put(("unsuback", mid, rcs, p))
        c.on_publish = lambda cl, u, mid, rc, p: self.events.put(("puback", mid, rc, p))
        c.on_disconnect = lambda cl, u, f, rc, p: self.events.put(("disconnect", rc, p))
        if will:
            c.will_set(**will)
        if v5:
            c.connect(host, port, keepalive, clean_start=clean, properties=connect_props)
        else:
            c.connect(host, port, keepalive)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        _, flags, rc, p = self.wait("connack")
        self.session_present = flags.session_present
        self.connack_rc = rc
        self.connack_props = p
        assert not rc.is_failure, f"CONNACK {rc}"

    def _loop(self):
        while self.running:
            rc = self.c.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.events.put(("closed", rc))
                break

    def wait(self, kind, pred=lambda e: True, timeout=WAIT):
        """The next event of `kind` that `pred` accepts; others are kept."""
        for i, e in enumerate(self.kept):
            if e[0] == kind and pred(e):
                return self.kept.pop(i)
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no {kind} within {timeout}s; kept {self.kept}")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if e[0] == kind and pred(e):
                return e
            self.kept.append(e)

    def sub(self, topic, qos=1, options=None, properties=None):
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return [code(r) for r in self.wait("suback", lambda e: e[1] == mid)[2]]

    def pub(self, topic, payload, qos=1, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos, retain, properties=properties)
        if qos == 0:
            return None
        e = self.wait("puback", lambda e: e[1] == info.mid)
        return code(e[2])

    def msg(self, timeout=WAIT):
        return self.wait("msg", timeout=timeout)[1]

    def no_msg(self, timeout=QUIET):
        try:
            m = self.wait("msg", timeout=timeout)[1]
        except AssertionError:
            return
        raise AssertionError(f"unexpected message {m.topic} {m.payload!r}")

    def disconnect(self, properties=None, reasoncode=None):
        if reasoncode is not None:
            self.c.disconnect(reasoncode=reasoncode, properties=properties)
        else:
            self.c.disconnect(properties=properties)
        self.wait("disconnect")
        self.stop()

    def kill(self):
        """Drops the socket without DISCONNECT."""
        self.running = False
        self.thread.join()
        s = self.c.socket()
        if s is not None:
            s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self):
        self.running = False
        self.thread.join()


def run(main):
    host, port = args()
    main(host, port)
    print("ok")
