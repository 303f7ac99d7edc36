"""Publishers at a trickle (200 messages/s, QoS 0), each to its own
subscriber on the other core, so the broker moves them there
(broker::affinity), while they keep reconnecting: cleanly, by dropping the
socket, or by a new connection taking the old one over; half with clean
sessions, half persistent. Each subscriber checks order per connection of
its publisher; at the end nearly everything arrived, the broker moved
publishers, every client id still connects and is heard, and no
connection was left behind."""

import random
import threading
import time

import paho.mqtt.client as mqtt

from common import args, id_on_core

HOST, PORT = args()
PAIRS = 6
SECONDS = 6.0

random.seed(7)
lock = threading.Lock()
received = {}
last = {}
disorder = []


def on_message(_c, _u, m):
    pub, gen, seq = m.payload.decode().split(":")
    with lock:
        received[pub] = received.get(pub, 0) + 1
        key = (pub, gen)
        if key in last and int(seq) <= last[key]:
            disorder.append((key, last[key], seq))
        last[key] = int(seq)


def client(cid, clean=True):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                    protocol=mqtt.MQTTv311, clean_session=clean)
    c.connect(HOST, PORT)
    c.loop_start()
    return c


def close_socket(c):
    """Drops the connection without DISCONNECT."""
    s = c.socket()
    if s is not None:
        s.close()


publishers = [id_on_core(f"churn-pub{i}", i % 2) for i in range(PAIRS)]
subscribers = []
for i in range(PAIRS):
    s = client(id_on_core(f"churn-sub{i}", 1 - i % 2))
    s.on_message = on_message
    s.subscribe(f"churn/{i}", 0)
    subscribers.append(s)
moved = []
monitor = client("churn-monitor")
monitor.on_message = lambda _c, _u, m: moved.append(int(m.payload))
monitor.subscribe("$SYS/brokers/+/publishers/moved", 0)
time.sleep(0.5)

sent = {}
left_open = []
stop = time.time() + SECONDS


def publish(i):
    cid = publishers[i]
    gen = 0
    while time.time() < stop:
        gen += 1
        p = client(cid, clean=random.random() < 0.5)
        time.sleep(0.05)
        life = time.time() + random.uniform(0.8, 2.0)
        seq = 0
        while time.time() < min(life, stop):
            seq += 1
            p.publish(f"churn/{i}", f"{cid}:{gen}:{seq}", 0)
            sent[cid] = sent.get(cid, 0) + 1
            time.sleep(0.005)
        how = random.random()
        time.sleep(0.05)  # what was published leaves the client
        if how < 0.4:
            p.disconnect()
            p.loop_stop()
        elif how < 0.7:
            p.loop_stop()
            close_socket(p)
        else:
            p.loop_stop()  # left open: the next connection takes it over
            left_open.append(p)


threads = [threading.Thread(target=publish, args=(i,)) for i in range(PAIRS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
time.sleep(1.0)

total_sent = sum(sent.values())
total_got = sum(received.values())
print(f"sent {total_sent}, received {total_got}, moved {max(moved, default=0)}")
assert not disorder, f"out of order: {disorder[:5]}"
assert total_got >= 0.99 * total_sent, f"{total_got} of {total_sent}"
assert max(moved, default=0) >= 1, "no publisher moved"

# Every client id connects again and is heard, wherever its session went.
for i, cid in enumerate(publishers):
    p = client(cid, clean=True)
    time.sleep(0.1)
    before = received.get(cid, 0)
    p.publish(f"churn/{i}", f"{cid}:final:1", 0)
    deadline = time.time() + 5
    while received.get(cid, 0) == before and time.time() < deadline:
        time.sleep(0.02)
    assert received.get(cid, 0) > before, f"{cid} not heard after the churn"
    p.disconnect()
    p.loop_stop()

# Only the subscribers and the monitor stay connected.
for p in left_open:
    close_socket(p)
connected = []
watch = client("churn-watch")
watch.on_message = lambda _c, _u, m: connected.append(int(m.payload))
watch.subscribe("$SYS/brokers/+/clients/connected", 0)
deadline = time.time() + 6
while time.time() < deadline and (not connected or connected[-1] != PAIRS + 2):
    time.sleep(0.1)
assert connected and connected[-1] == PAIRS + 2, f"connected: {connected}"
print("ok")
