//! Names of the Redis keys of one election, and the lock value format.
//!
//! All keys of an election share one hash tag (`{name}`), so that the Lua
//! scripts, which touch several keys, also work on Redis Cluster.

use serde::{Deserialize, Serialize};

use crate::backend::Holder;

/// The keys and channel of one election.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The lease: a string with a TTL, holding a [`LockValue`].
    pub lock: String,
    /// The current term's lock value again, with the lock's TTL: a lock
    /// deleted under its holder (an operator's DEL, eviction, a failover
    /// that lost the write) still shows the term until it could have ended,
    /// so that nobody is granted the lease meanwhile.
    pub term: String,
    /// The fencing counter: the last token minted, without a TTL.
    pub fence: String,
    /// The token of the last term that was released on purpose.
    pub released: String,
    /// Set (with a TTL of one lease) when the store had no fencing counter:
    /// nobody is granted the lease until it expires.
    pub quarantine: String,
    /// Hash: identity → presence JSON of every candidate standing.
    pub members: String,
    /// Sorted set: identity → when it was last heard of (server ms).
    pub seen: String,
    /// Sorted set: healthy identity → priority.
    pub preferred: String,
    /// The pending switchover request (JSON), without a TTL.
    pub switchover: String,
    /// Set by a switchover's release, with a TTL of one lease: only the
    /// candidate it names may acquire while it exists.
    pub handoff: String,
    /// When the lease was last found free (server ms), for the priority
    /// hold-back.
    pub vacant: String,
    /// Pub/sub channel on which acquire, release and switchover requests
    /// are announced.
    pub channel: String,
}

impl Keys {
    pub fn new(prefix: &str, election: &str) -> Keys {
        let base = format!("{prefix}:{{{election}}}");
        Keys {
            lock: format!("{base}:lock"),
            term: format!("{base}:term"),
            fence: format!("{base}:fence"),
            released: format!("{base}:released"),
            quarantine: format!("{base}:quarantine"),
            members: format!("{base}:members"),
            seen: format!("{base}:seen"),
            preferred: format!("{base}:preferred"),
            switchover: format!("{base}:switchover"),
            handoff: format!("{base}:handoff"),
            vacant: format!("{base}:vacant"),
            channel: format!("{base}:events"),
        }
    }
}

/// What the lock key holds while a leaderd candidate leads. It is JSON so an
/// operator can read it with `redis-cli GET`; the scripts compare it whole,
/// and it is unique per term thanks to the random term id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockValue {
    pub holder: String,
    pub token: u64,
    pub term: String,
    pub acquired_at: String,
}

impl LockValue {
    /// `None` when the text is not a value leaderd wrote.
    pub fn parse(text: &str) -> Option<LockValue> {
        serde_json::from_str(text).ok()
    }

    /// The JSON text, fields in the order the acquire script writes them.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn holder(&self) -> Holder {
        Holder {
            identity: self.holder.clone(),
            fencing_token: Some(self.token),
            term_id: Some(self.term.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag() {
        let keys = Keys::new("leaderd", "my-controller");
        assert_eq!(keys.lock, "leaderd:{my-controller}:lock");
        assert_eq!(keys.fence, "leaderd:{my-controller}:fence");
        assert_eq!(keys.channel, "leaderd:{my-controller}:events");
    }

    #[test]
    fn parses_what_the_acquire_script_writes() {
        let text =
            r#"{"holder":"a\/b","token":7,"term":"ff","acquired_at":"2026-11-26T00:00:00Z"}"#;
        let value = LockValue::parse(text).expect("parses");
        assert_eq!(value.holder, "a/b");
        assert_eq!(value.token, 7);
        assert!(LockValue::parse("garbage").is_none());
    }
}
