//! The broker driven by `mosquitto_pub` / `mosquitto_sub` (Debian
//! `mosquitto-clients`) as processes, MQTT 3.1.1 and 5.0, one broker per
//! test. A subscriber runs with `-d` so its "received SUBACK" line is the
//! signal that publishing may start.

mod mqtt_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use mqtt_support::*;

const VERSIONS: [&str; 2] = ["mqttv311", "mqttv5"];

/// A running `mosquitto_sub -d`: its output lines on a channel.
struct Sub {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Sub {
    fn spawn(port: u16, args: &[&str]) -> Sub {
        // stdbuf: line-buffered output through the pipe, so the SUBACK line
        // arrives when it is printed.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "-eL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-d"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        let (tx, lines) = channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Sub {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; output: {:#?}", self.seen),
            }
        }
    }

    /// Waits for the "received SUBACK" debug line.
    fn wait_suback(&mut self) {
        self.wait_line("received SUBACK");
    }

    /// Output lines that are not debug lines, until the process ends.
    fn messages(mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(20));
        self.seen.extend(self.lines.try_iter());
        self.seen
            .iter()
            .filter(|l| {
                !l.starts_with("Client ") && !l.starts_with("Subscribed") && *l != "Timed out"
            })
            .cloned()
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pub_cmd(port: u16, args: &[&str]) {
    let (status, out, err) = run_with_timeout(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        WAIT,
    );
    assert!(
        status.success(),
        "mosquitto_pub {args:?}: {status:?} {out} {err}"
    );
}

/// The README example, as written but for the port.
#[test]
fn readme_example() {
    let b = Broker::start();
    let mut sub = Sub::spawn(b.port, &["-t", "test/#", "-v", "-C", "1"]);
    sub.wait_suback();
    pub_cmd(b.port, &["-t", "test/hello", "-m", "world"]);
    assert_eq!(sub.messages(), vec!["test/hello world".to_string()]);
}

/// QoS 0/1/2 in both directions, in 3.1 (MQIsdp), 3.1.1 and 5.0.
#[test]
fn qos_levels_all_versions() {
    let b = Broker::start();
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        for sub_qos in ["0", "1", "2"] {
            let mut sub = Sub::spawn(
                b.port,
                &[
                    "-V", v, "-q", sub_qos, "-t", "mq/#", "-C", "3", "-F", "%t %q %p",
                ],
            );
            sub.wait_suback();
            for q in ["0", "1", "2"] {
                pub_cmd(
                    b.port,
                    &[
                        "-V",
                        v,
                        "-q",
                        q,
                        "-t",
                        &format!("mq/{q}"),
                        "-m",
                        &format!("m{q}"),
                    ],
                );
            }
            let expected: Vec<String> = ["0", "1", "2"]
                .iter()
                .map(|q| format!("mq/{q} {} m{q}", q.min(&sub_qos)))
                .collect();
            assert_eq!(sub.messages(), expected, "{v} subscribed at QoS {sub_qos}");
        }
    }
}

/// 5.0 properties pass through: payload format, content type, response
/// topic, correlation data, user properties, message expiry (what is left).
#[test]
fn v5_properties_pass_through() {
    let b = Broker::start();
    let mut sub = Sub::spawn(
        b.port,
        &[
            "-V",
            "mqttv5",
            "-t",
            "props/#",
            "-C",
            "1",
            "-F",
            "%t|%p|%F|%C|%R|%D|%E|%P",
        ],
    );
    sub.wait_suback();
    pub_cmd(
        b.port,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "props/req",
            "-m",
            "hello",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "props/resp",
            "-D",
            "publish",
            "correlation-data",
            "corr-42",
            "-D",
            "publish",
            "message-expiry-interval",
            "60",
            "-D",
            "publish",
            "user-property",
            "color",
            "blue",
        ],
    );
    let got = sub.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    let fields: Vec<&str> = got[0].split('|').collect();
    assert_eq!(
        &fields[..6],
        [
            "props/req",
            "hello",
            "1",
            "text/plain",
            "props/resp",
            "corr-42"
        ]
    );
    let left: u32 = fields[6].parse().expect("expiry left");
    assert!((59..=60).contains(&left), "{left}");
    assert!(
        fields[7].contains("color") && fields[7].contains("blue"),
        "{}",
        fields[7]
    );
}

/// Retained: set, replace, clear, in both versions.
#[test]
fn retained_set_replace_clear() {
    let b = Broker::start();
    for v in VERSIONS {
        let topic = format!("ret/{v}");
        pub_cmd(
            b.port,
            &["-V", v, "-r", "-q", "1", "-t", &topic, "-m", "first"],
        );
        pub_cmd(
            b.port,
            &["-V", v, "-r", "-q", "1", "-t", &topic, "-m", "second"],
        );
        let sub = Sub::spawn(b.port, &["-V", v, "-t", &topic, "-C", "1", "-F", "%r %p"]);
        assert_eq!(sub.messages(), vec!["1 second".to_string()], "{v}");
        pub_cmd(b.port, &["-V", v, "-r", "-q", "1", "-t", &topic, "-n"]);
        let mut sub = Sub::spawn(b.port, &["-V", v, "-t", &topic, "-W", "1", "-F", "%r %p"]);
        sub.wait_suback();
        assert_eq!(sub.messages(), Vec::<String>::new(), "{v}: cleared");
    }
}

/// The will of a killed client process is published; a client that
/// disconnects normally leaves no will.
#[test]
fn will_of_killed_process() {
    let b = Broker::start();
    for v in VERSIONS {
        let mut watch = Sub::spawn(b.port, &["-V", v, "-t", "will/m", "-C", "1", "-F", "%t %p"]);
        watch.wait_suback();
        // A normal end (-C 1 after one message) leaves no will...
        let mut polite = Sub::spawn(
            b.port,
            &[
                "-V",
                v,
                "-t",
                "other",
                "-C",
                "1",
                "--will-topic",
                "will/m",
                "--will-payload",
                "polite",
            ],
        );
        polite.wait_suback();
        pub_cmd(b.port, &["-V", v, "-t", "other", "-m", "x"]);
        polite.messages();
        // ...a killed one does.
        let mut willer = Sub::spawn(
            b.port,
            &[
                "-V",
                v,
                "-t",
                "x",
                "--will-topic",
                "will/m",
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
            ],
        );
        willer.wait_suback();
        willer.child.kill().unwrap();
        assert_eq!(watch.messages(), vec!["will/m gone".to_string()], "{v}");
    }
}

/// A persistent session (`-c`, 5.0 with `-x`) queues QoS 1 messages while
/// the subscriber is away.
#[test]
fn persistent_session_queues_while_offline() {
    let b = Broker::start();
    for v in VERSIONS {
        let id = format!("mosq-persist-{v}");
        let mut args = vec!["-V", v, "-c", "-i", &id, "-q", "1", "-t", "pq/#"];
        if v == "mqttv5" {
            args.extend(["-x", "60"]);
        }
        let mut first = args.clone();
        first.push("-E");
        let mut sub = Sub::spawn(b.port, &first);
        sub.wait_suback();
        sub.messages();
        for i in 0..3 {
            pub_cmd(
                b.port,
                &["-V", v, "-q", "1", "-t", "pq/a", "-m", &format!("m{i}")],
            );
        }
        let mut again = args.clone();
        again.extend(["-C", "3", "-F", "%p"]);
        let sub = Sub::spawn(b.port, &again);
        assert_eq!(sub.messages(), vec!["m0", "m1", "m2"], "{v}");
    }
}

/// The ACL example: subscribing `test/nosubscribe` is refused (0x80 in
/// 3.1.1, 0x87 in 5.0, shown by mosquitto_sub's debug output).
#[test]
fn acl_denies_subscribe() {
    let b = BrokerConfig::default()
        .tail("[[mqtt.acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"test/nosubscribe\"\n")
        .start();
    for v in VERSIONS {
        let mut sub = Sub::spawn(b.port, &["-V", v, "-t", "test/nosubscribe", "-E"]);
        let line = sub.wait_line("Subscribed (mid: 1):");
        let code = if v == "mqttv5" { "135" } else { "128" };
        assert_eq!(line, format!("Subscribed (mid: 1): {code}"), "{v}");
        let out = sub.messages();
        assert!(
            out.iter()
                .any(|l| l.contains("All subscription requests were denied")),
            "{v}: {out:?}"
        );
        let mut ok = Sub::spawn(b.port, &["-V", v, "-q", "1", "-t", "test/ok", "-E"]);
        assert_eq!(
            ok.wait_line("Subscribed (mid: 1):"),
            "Subscribed (mid: 1): 1"
        );
    }
}

/// Topic alias from a real 5.0 client: `mosquitto_pub -l` with
/// `topic-alias 1` sends the topic once, then the alias alone; the broker
/// resolves it for every message.
#[test]
fn v5_topic_alias_from_mosquitto_pub() {
    let b = Broker::start();
    let mut sub = Sub::spawn(
        b.port,
        &["-V", "mqttv5", "-t", "alias/#", "-C", "3", "-F", "%t %p"],
    );
    sub.wait_suback();
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
        ])
        .args([
            "-t",
            "alias/long/topic",
            "-l",
            "-D",
            "publish",
            "topic-alias",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\nthree\n").unwrap();
    }
    let (status, out, err) = wait_output(child, WAIT);
    assert!(status.success(), "mosquitto_pub: {status:?} {out} {err}");
    let m = sub.messages();
    assert_eq!(
        m,
        vec![
            "alias/long/topic one",
            "alias/long/topic two",
            "alias/long/topic three"
        ]
    );
}
