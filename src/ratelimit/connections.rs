//! The per-user connection cap (`websocket.max_connections_per_user`): how many sockets
//! one user holds at once. Counted on this node, or across nodes in Redis when the rate
//! limiter is `kind = "redis"`: a sorted set per user whose members are connection ids
//! scored by when their entry expires, so a node that dies without closing its sockets
//! frees their places within [`ENTRY_TTL`]. Each node refreshes its connections' entries
//! every [`REFRESH_EVERY`] (re-adding them after Redis lost its data). While Redis does
//! not answer, the node counts its own sockets only, like the message rate.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::Script;
use foldhash::HashMap;

use super::shared::Shared;

/// How long a connection's entry in Redis lives without a refresh.
pub const ENTRY_TTL: Duration = Duration::from_secs(30);
/// How often a node refreshes the entries of its open connections.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Adds `ARGV[2]` to the set `KEYS[1]` if it has fewer than `ARGV[1]` live entries (after
/// dropping expired ones); the entry lives `ARGV[3]` ms. Returns 1 when added.
const ACQUIRE_LUA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));

/// Sets the entries `ARGV[2..]` of `KEYS[1]` to live `ARGV[1]` ms from now.
const REFRESH_LUA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
";
static REFRESH: LazyLock<Script> = LazyLock::new(|| Script::new(REFRESH_LUA));

/// Removes the entry `ARGV[1]` of `KEYS[1]`.
const RELEASE_LUA: &str = "return redis.call('ZREM', KEYS[1], ARGV[1])";
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

fn key(user: &str) -> String {
    format!("portcullis:conns:{user}")
}

fn ttl_ms() -> String {
    ENTRY_TTL.as_millis().to_string()
}

/// The cap and this node's open connections per user.
#[derive(Default)]
pub(super) struct Connections {
    cap: Option<u32>,
    /// Connection ids per user, of the sockets open on this node.
    held: Mutex<HashMap<String, Vec<String>>>,
}

impl Connections {
    pub(super) fn new(cap: Option<u32>) -> Connections {
        Connections {
            cap,
            held: Mutex::default(),
        }
    }

    pub(super) fn cap(&self) -> Option<u32> {
        self.cap
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for `conn_id` of `user`; false when the user is at the cap.
    pub(super) async fn open(&self, shared: Option<&Shared>, user: &str, conn_id: &str) -> bool {
        let Some(cap) = self.cap else { return true };
        if let Some(shared) = shared {
            let args = [cap.to_string(), conn_id.to_string(), ttl_ms()];
            match shared
                .eval(&ACQUIRE, &key(user), &args, Instant::now())
                .await
            {
                Some(added) => {
                    if added == 1 {
                        self.held()
                            .entry(user.to_string())
                            .or_default()
                            .push(conn_id.to_string());
                    }
                    return added == 1;
                }
                None => shared.fell_back(),
            }
        }
        let mut held = self.held();
        let conns = held.entry(user.to_string()).or_default();
        if conns.len() >= cap as usize {
            return false;
        }
        conns.push(conn_id.to_string());
        true
    }

    /// Gives back the place of a connection [`Self::open`] let in.
    pub(super) async fn close(&self, shared: Option<&Shared>, user: &str, conn_id: &str) {
        if self.cap.is_none() {
            return;
        }
        {
            let mut held = self.held();
            if let Some(conns) = held.get_mut(user) {
                conns.retain(|c| c != conn_id);
                if conns.is_empty() {
                    held.remove(user);
                }
            }
        }
        if let Some(shared) = shared {
            // Left to expire if Redis does not answer now.
            let args = [conn_id.to_string()];
            shared
                .eval(&RELEASE, &key(user), &args, Instant::now())
                .await;
        }
    }

    /// Refreshes the Redis entries of every connection open on this node.
    pub(super) async fn refresh(&self, shared: &Shared) {
        let users: Vec<(String, Vec<String>)> = self
            .held()
            .iter()
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect();
        for (user, conns) in users {
            let mut args = Vec::with_capacity(conns.len() + 1);
            args.push(ttl_ms());
            args.extend(conns);
            if shared
                .eval(&REFRESH, &key(&user), &args, Instant::now())
                .await
                .is_none()
            {
                // Redis is away: the next round re-adds everything.
                return;
            }
        }
    }
}
