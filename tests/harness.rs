//! Self-tests of the test support code (independent of leaderd itself), so a
//! failing scenario can be trusted to be about leaderd, not the harness.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn redis_server_lifecycle() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.cmd(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.get("k").as_deref(), Some("v"));
    assert_eq!(redis.get("missing"), None);
    assert_eq!(redis.cmd(&["INCR", "n"]), "1");
    assert_eq!(redis.cmd(&["HSET", "h", "a", "b"]), "1");
    assert_eq!(redis.cmd(&["TYPE", "h"]), "hash");
    assert_eq!(redis.cmd(&["PTTL", "k"]), "-1");

    // Frozen: commands time out; thawed: they work again.
    redis.freeze();
    let t = Instant::now();
    let err = redis.try_cmd(&["PING"]).expect_err("frozen redis answered");
    assert!(err.is_timeout(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    redis.thaw();
    assert_eq!(redis.cmd(&["PING"]), "PONG");

    // Restart on the same port, without data.
    let port = redis.port();
    redis.restart_empty();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.get("k"), None);

    // An error reply is a reply, rendered like redis-cli --raw.
    assert!(
        redis
            .cmd(&["NOSUCHCOMMAND"])
            .starts_with("ERR unknown command")
    );

    redis.kill();
    assert!(redis.try_cmd(&["PING"]).is_err());
}

#[test]
fn subscription_delivers_messages_and_times_out() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe("chan");
    let t = Instant::now();
    assert_eq!(sub.next_message(Duration::from_millis(300)), None);
    assert!(t.elapsed() < Duration::from_secs(2));
    // Nothing is lost to the timeouts before it.
    assert_eq!(redis.cmd(&["PUBLISH", "chan", "one"]), "1");
    assert_eq!(redis.cmd(&["PUBLISH", "other", "x"]), "0");
    assert_eq!(redis.cmd(&["PUBLISH", "chan", "two"]), "1");
    assert_eq!(sub.next_message(PATIENCE).as_deref(), Some("one"));
    assert_eq!(sub.next_message(PATIENCE).as_deref(), Some("two"));
    // Dropping it ends the subscription promptly.
    let t = Instant::now();
    drop(sub);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(redis.cmd(&["PUBSUB", "NUMSUB", "chan"]), "chan\n0");
}

#[test]
fn two_redis_servers_get_distinct_ports() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    a.cmd(&["SET", "x", "a"]);
    assert_eq!(b.get("x"), None);
}

/// Serves one canned response on one connection; yields the request head.
fn canned(response: &'static [u8]) -> (String, thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(response);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    (addr, h)
}

#[test]
fn http_client_sends_the_method_and_returns_non_2xx_as_an_answer() {
    let (addr, h) = canned(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\n\r\nnot yet");
    let answer = http_request(&addr, "POST", "/leader", Duration::from_secs(5));
    assert_eq!(answer.expect("503 is an answer"), (503, "not yet".into()));
    let head = h.join().expect("server");
    assert!(head.starts_with("POST /leader HTTP/1.1\r\n"), "{head:?}");
}

#[test]
fn http_client_times_out_on_a_silent_server() {
    // Accepts (via the backlog) but never answers, like a SIGSTOPped process.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let t = Instant::now();
    assert!(http_get(&addr, "/leader", Duration::from_millis(200)).is_none());
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(l);
    assert!(http_get(&addr, "/leader", Duration::from_millis(200)).is_none());
}

#[test]
fn metrics_helpers_sum_by_labels() {
    let text = "# HELP c a counter\n# TYPE c counter\nc{election=\"e\",reason=\"x\"} 2\nc{election=\"e\",reason=\"y\"} 3\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    assert_eq!(metric_sum(text, "c", &[]), 5.0);
    assert_eq!(metric_sum(text, "c", &[("reason", "y")]), 3.0);
    assert_eq!(metric_sum(text, "nope", &[]), 0.0);
    let s = parse_metrics(text);
    assert!(s.samples.iter().any(|s| s.metric == "h"));
}

#[test]
#[should_panic(expected = "waiting until never")]
fn wait_until_is_bounded() {
    wait_until(Duration::from_millis(50), "never", || false);
}
