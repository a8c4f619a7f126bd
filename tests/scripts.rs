//! The Lua scripts alone, against a real redis-server: each rule that keeps
//! leaderd from touching what it did not write, or from reviving a term that
//! is over, checked on exactly the state that exercises it. (Reaching these
//! states through the daemon needs a partial seal or a renewal delayed in
//! the network at a precise moment; `quorum.rs` does the latter end to end.)

mod support;

use redis::Value;
use support::*;

const ACQUIRE: &str = include_str!("../src/backend/redis/acquire.lua");
const RENEW: &str = include_str!("../src/backend/redis/renew.lua");
const RELEASE: &str = include_str!("../src/backend/redis/release.lua");
const SEAL: &str = include_str!("../src/backend/redis/seal.lua");

const LOCK: &str = "leaderd:{s}:lock";
const FENCE: &str = "leaderd:{s}:fence";
const RELEASED: &str = "leaderd:{s}:released";
const QUARANTINE: &str = "leaderd:{s}:quarantine";
const MEMBERS: &str = "leaderd:{s}:members";
const SEEN: &str = "leaderd:{s}:seen";
const PREFERRED: &str = "leaderd:{s}:preferred";
const SWITCHOVER: &str = "leaderd:{s}:switchover";
const HANDOFF: &str = "leaderd:{s}:handoff";
const VACANT: &str = "leaderd:{s}:vacant";
const TERM: &str = "leaderd:{s}:term";
const CHANNEL: &str = "leaderd:{s}:events";

const PRESENCE: &str = r#"{"identity":"node-1","url":null,"version":"t","priority":0,"healthy":true,"started_at":"2026-12-02T00:00:00Z"}"#;

fn run(redis: &RedisServer, script: &str, keys: &[&str], args: &[&str]) -> Value {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connect");
    let script = redis::Script::new(script);
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(*key);
    }
    for arg in args {
        invocation.arg(*arg);
    }
    invocation.invoke(&mut conn).expect("script ran")
}

fn code(reply: &Value) -> i64 {
    match reply {
        Value::Int(n) => *n,
        Value::Array(items) => match items.first() {
            Some(Value::Int(n)) => *n,
            other => panic!("no code in {other:?}"),
        },
        other => panic!("unexpected reply {other:?}"),
    }
}

fn now_us(redis: &RedisServer) -> u64 {
    let time = redis.cmd(&["TIME"]);
    let mut parts = time.lines().map(|p| p.parse::<u64>().expect("TIME"));
    let (seconds, micros) = (parts.next().expect("s"), parts.next().expect("us"));
    seconds * 1_000_000 + micros
}

fn acquire(redis: &RedisServer, floor: u64) -> Value {
    let args = serde_json::json!({
        "identity": "node-1",
        "term": "0123456789abcdef0123456789abcdef",
        "lease_ms": 1000,
        "floor": floor,
        "acquired_at": "2026-12-02T00:00:00.000Z",
        "channel": CHANNEL,
        "guard": 0,
        "announce": true,
        "presence": PRESENCE,
        "member_ttl_ms": 1000,
        "priority": 0,
        "holdback_ms": 0,
    });
    run(
        redis,
        ACQUIRE,
        &[
            LOCK, FENCE, RELEASED, QUARANTINE, MEMBERS, SEEN, PREFERRED, HANDOFF, VACANT, TERM,
        ],
        &[&args.to_string()],
    )
}

fn renew(redis: &RedisServer, value: &str, restore: bool, token: u64, deadline_us: u64) -> Value {
    let args = serde_json::json!({
        "value": value,
        "lease_ms": 1000,
        "token": token,
        "restore": restore,
        "deadline_us": deadline_us,
        "identity": "node-1",
        "presence": PRESENCE,
        "priority": 0,
        "member_ttl_ms": 1000,
    });
    run(
        redis,
        RENEW,
        &[
            LOCK, FENCE, RELEASED, MEMBERS, SEEN, PREFERRED, SWITCHOVER, TERM,
        ],
        &[&args.to_string()],
    )
}

/// release.lua with `value` (and `also`), `notice` ('' = an undo).
fn release(redis: &RedisServer, value: &str, also: &str, notice: &str, token: u64) -> Value {
    let args = serde_json::json!({
        "value": value,
        "also": also,
        "token": token,
        "channel": CHANNEL,
        "notice": notice,
        "handoff": "",
        "lease_ms": 1000,
    });
    run(
        redis,
        RELEASE,
        &[LOCK, RELEASED, HANDOFF, SWITCHOVER, VACANT, PREFERRED, TERM],
        &[&args.to_string()],
    )
}

const VALUE: &str = r#"{"holder":"node-1","token":7,"term":"0123456789abcdef0123456789abcdef","acquired_at":"2026-12-02T00:00:00.000Z"}"#;

#[test]
fn a_store_without_a_fencing_counter_grants_nothing_for_a_lease_then_counts_from_its_clock() {
    let redis = RedisServer::start();
    let before = now_us(&redis);
    assert_eq!(code(&acquire(&redis, 1)), 4, "granted at once");
    let counter: u64 = redis.get(FENCE).expect("counter").parse().expect("number");
    assert!(
        counter >= before,
        "counter {counter} below the clock {before}"
    );
    assert_eq!(
        code(&acquire(&redis, 1)),
        4,
        "granted during the quarantine"
    );
    redis.cmd(&["DEL", QUARANTINE]);
    let granted = acquire(&redis, 1);
    assert_eq!(code(&granted), 1);
    let Value::Array(items) = granted else {
        panic!("{granted:?}")
    };
    assert_eq!(items[1], Value::Int(counter as i64 + 1));
}

#[test]
fn undoing_a_partial_seal_frees_a_server_that_holds_the_sealed_value() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", FENCE, "6"]);
    let granted = acquire(&redis, 1);
    let Value::Array(items) = &granted else {
        panic!("{granted:?}")
    };
    let Value::BulkString(value) = &items[2] else {
        panic!("{granted:?}")
    };
    let value = String::from_utf8(value.clone()).expect("utf8");
    let sealed = value.replace("\"token\":7", "\"token\":9");
    assert_eq!(
        code(&run(
            &redis,
            SEAL,
            &[LOCK, FENCE, TERM],
            &[&value, &sealed, "9", CHANNEL]
        )),
        1
    );
    // The undo knows the grant it got and the sealed form it sent.
    let undone = release(&redis, &value, &sealed, "", 7);
    assert_eq!(code(&undone), 1);
    assert_eq!(redis.get(LOCK), None, "the sealed key survived the undo");
}

#[test]
fn a_renewal_after_its_deadline_changes_nothing() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", LOCK, VALUE, "PX", "1000"]);
    let past = now_us(&redis) - 1;
    assert_eq!(code(&renew(&redis, VALUE, false, 7, past)), 3);
    let pttl: i64 = redis.cmd(&["PTTL", LOCK]).parse().expect("PTTL");
    assert!(pttl <= 1000);
    redis.cmd(&["DEL", LOCK]);
    assert_eq!(code(&renew(&redis, VALUE, true, 7, past)), 3);
    assert_eq!(redis.get(LOCK), None, "a late renewal restored the key");
    // In time, and with an unknown deadline (0), it renews and restores.
    let future = now_us(&redis) + 60_000_000;
    assert_eq!(code(&renew(&redis, VALUE, true, 7, future)), 1);
    assert_eq!(redis.get(LOCK).as_deref(), Some(VALUE));
    assert_eq!(code(&renew(&redis, VALUE, true, 7, 0)), 1);
}

#[test]
fn a_renewal_never_restores_a_term_released_on_that_server() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", FENCE, "7"]);
    // The release reached this server before the (delayed) renewal.
    assert_eq!(
        code(&release(&redis, VALUE, "", "released 7", 7)),
        0,
        "nothing of ours was there"
    );
    assert_eq!(redis.get(RELEASED).as_deref(), Some("7"), "not recorded");
    assert_eq!(code(&renew(&redis, VALUE, true, 7, 0)), 0);
    assert_eq!(redis.get(LOCK), None);
}

#[test]
fn a_restore_never_overwrites_a_foreign_counter_or_released_marker() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", FENCE, "not a number"]);
    assert_eq!(code(&renew(&redis, VALUE, true, 7, 0)), 2);
    assert_eq!(redis.get(FENCE).as_deref(), Some("not a number"));
    assert_eq!(redis.get(LOCK), None);

    redis.cmd(&["SET", FENCE, "7"]);
    redis.cmd(&["HSET", RELEASED, "a", "b"]);
    assert_eq!(code(&renew(&redis, VALUE, true, 7, 0)), 2);
    assert_eq!(redis.cmd(&["TYPE", RELEASED]), "hash");
    assert_eq!(redis.get(LOCK), None);
}

#[test]
fn a_seal_never_overwrites_a_foreign_counter() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", LOCK, VALUE, "PX", "1000"]);
    redis.cmd(&["SET", FENCE, "not a number"]);
    let sealed = VALUE.replace("\"token\":7", "\"token\":9");
    assert_eq!(
        code(&run(
            &redis,
            SEAL,
            &[LOCK, FENCE, TERM],
            &[VALUE, &sealed, "9", CHANNEL]
        )),
        0
    );
    assert_eq!(redis.get(FENCE).as_deref(), Some("not a number"));
    assert_eq!(redis.get(LOCK).as_deref(), Some(VALUE));
}

#[test]
fn a_release_leaves_a_foreign_released_marker_alone() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", LOCK, VALUE, "PX", "1000"]);
    redis.cmd(&["SET", RELEASED, "operator's note"]);
    let reply = release(&redis, VALUE, "", "released 7", 7);
    assert_eq!(code(&reply), 2);
    assert_eq!(redis.get(LOCK), None, "our lease was not released");
    assert_eq!(redis.get(RELEASED).as_deref(), Some("operator's note"));
}
