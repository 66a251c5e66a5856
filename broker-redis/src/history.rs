//! Topic history in Redis: the publish and read scripts, and how their
//! answers are checked.
//!
//! Per topic, under the broker's prefix:
//!
//! - `{prefix}position:{topic}`, a hash: `epoch` (the topic's history
//!   generation, a random string chosen by the first writer) and `top`
//!   (the offset of the latest publication);
//! - `{prefix}history:{topic}`, a stream: one entry per kept publication,
//!   its field `f` the positioned frame ([`crate::wire`], version 2), its
//!   entry id the Redis time it was kept at.
//!
//! The publish script assigns the next offset, keeps the frame, trims the
//! stream by count (`MAXLEN`) and age (`MINID`), sets the keys' expiry and
//! `PUBLISH`es the frame, all at once: Redis runs one script at a time, so
//! the channel carries a topic's publications in offset order to every
//! node. A position hash that is missing (never written, expired, or
//! Redis restarted empty or flushed) is created with a new epoch, so a
//! client holding a position of the old one is told "not recovered"
//! (docs/PROTOCOL.md §8).

use crate::wire;
use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisResult};
use signalbox::{BrokerMessage, HistoryLimits, Position};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Appends a publication and publishes it. KEYS: position hash, stream.
/// ARGV: epoch candidate, frame head, max_len, max_age in ms (≥ 1),
/// channel, the publish command (`PUBLISH`, or `SPUBLISH` on a cluster,
/// where the channel carries the keys' hash tag), the writer check
/// (`cluster`, `replicated` or `single`). Returns `{epoch, offset}`.
///
/// On a cluster the position hash also names the master that wrote it
/// (`node`, its `CLUSTER MYID`); behind Sentinel, the master's replication
/// id (`master_replid`, which a promoted replica changes). A position
/// written by another master — a failover to a replica, which may lack the
/// last publications, or a slot moved — is taken as lost, and the topic
/// starts a new epoch.
pub(crate) const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local me = false
if ARGV[7] == 'cluster' then
  me = redis.call('CLUSTER', 'MYID')
elseif ARGV[7] == 'replicated' then
  me = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
end
if me and epoch and redis.call('HGET', KEYS[1], 'node') ~= me then
  epoch = false
end
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  if me then
    redis.call('HSET', KEYS[1], 'node', me)
  end
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
local len = string.len(epoch)
local str
if len < 32 then
  str = string.char(0xa0 + len)
elseif len < 256 then
  str = string.char(0xd9, len)
else
  return redis.error_reply('signalbox: epoch too long')
end
local bytes = {}
local rest = offset
for i = 8, 1, -1 do
  bytes[i] = rest % 256
  rest = math.floor(rest / 256)
end
local frame = ARGV[2] .. str .. epoch .. string.char(0xcf, unpack(bytes))
local age = tonumber(ARGV[4])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'f', frame)
if now_ms > age then
  redis.call('XTRIM', KEYS[2], 'MINID', now_ms - age)
end
redis.call('PEXPIRE', KEYS[2], age)
if redis.call('PTTL', KEYS[1]) < age then
  redis.call('PEXPIRE', KEYS[1], age)
end
redis.call(ARGV[6], ARGV[5], frame)
return {epoch, offset}
";

/// Reads a topic's position and kept publications. KEYS: position hash,
/// stream. ARGV: epoch candidate, what to read (`all`, `none`, or the
/// offset after which to read), max_age in ms (≥ 1), the writer check
/// (`cluster`, `replicated` or `single`). Returns `{epoch, top, entries}` with the entries as `XRANGE`
/// gives them, newest first when an offset was given. A position written
/// by another master is taken as lost, as in [`PUBLISH_SCRIPT`].
pub(crate) const READ_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local age = tonumber(ARGV[3])
local me = false
if ARGV[4] == 'cluster' then
  me = redis.call('CLUSTER', 'MYID')
elseif ARGV[4] == 'replicated' then
  me = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
end
if me and epoch and redis.call('HGET', KEYS[1], 'node') ~= me then
  epoch = false
end
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  if me then
    redis.call('HSET', KEYS[1], 'node', me)
  end
  redis.call('PEXPIRE', KEYS[1], age)
  redis.call('DEL', KEYS[2])
  return {epoch, 0, {}}
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms > age then
  redis.call('XTRIM', KEYS[2], 'MINID', now_ms - age)
end
local entries = {}
if ARGV[2] == 'all' then
  entries = redis.call('XRANGE', KEYS[2], '-', '+')
elseif ARGV[2] ~= 'none' then
  local missed = top - tonumber(ARGV[2])
  if missed > 0 then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', missed)
  end
end
return {epoch, top, entries}
";

/// Extends the life of held topics' positions: KEYS[i] to at least
/// ARGV[i] ms (never shortens one; a missing hash stays missing).
pub(crate) const KEEP_SCRIPT: &str = r"
for i, key in ipairs(KEYS) do
  local want = tonumber(ARGV[i])
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < want then
    redis.call('PEXPIRE', key, want)
  end
end
return 0
";

/// Gives a topic a new epoch when Redis went back on its offsets. KEYS:
/// position hash, stream. ARGV: the epoch that went back, the new one.
/// Does nothing when the epoch already changed (another node did it).
/// Returns 1 when it changed the epoch.
pub(crate) const REWIND_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'top', 0)
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
";

/// A Lua script run with `EVALSHA`, loaded into Redis on first use and
/// again whenever Redis answers `NOSCRIPT` (a restarted or flushed
/// script cache).
pub(crate) struct LuaScript {
    source: &'static str,
    sha: OnceLock<String>,
}

impl LuaScript {
    pub(crate) const fn new(source: &'static str) -> Self {
        LuaScript {
            source,
            sha: OnceLock::new(),
        }
    }

    async fn load<C: ConnectionLike + Send>(&self, conn: &mut C) -> RedisResult<String> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.source)
            .query_async(conn)
            .await?;
        let _ = self.sha.set(sha.clone());
        Ok(sha)
    }

    /// Runs the script with `keys` and `args`.
    pub(crate) async fn run<T: FromRedisValue, C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> RedisResult<T> {
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load(conn).await?,
        };
        let call = |sha: &str| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match call(&sha).query_async(conn).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let sha = self.load(conn).await?;
                call(&sha).query_async(conn).await
            }
            answer => answer,
        }
    }
}

/// One stream entry as the read script gives it: its id and its fields.
pub(crate) type RawEntry = (String, Vec<Vec<u8>>);

/// The read script's answer: epoch, top and the entries.
pub(crate) type ReadReply = (String, u64, Vec<RawEntry>);

/// A fresh epoch: random, 12 hex digits (the same form as the hub's
/// in-memory epochs).
pub(crate) fn new_epoch() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// `max_age` in whole milliseconds, at least 1 (an expiry of 0 would
/// delete the keys at once).
pub(crate) fn age_ms(limits: &HistoryLimits) -> u64 {
    u64::try_from(limits.max_age.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What the read script is asked for `after`.
pub(crate) fn read_mode(after: Option<u64>) -> String {
    match after {
        None => "all".to_owned(),
        Some(u64::MAX) => "none".to_owned(),
        Some(offset) => offset.to_string(),
    }
}

/// Why an entry read back from a topic's history was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// Not a positioned frame, or too large.
    Malformed,
    /// Kept under another epoch (cannot happen through the scripts, which
    /// drop the stream with its epoch; left out rather than replayed).
    OtherEpoch,
}

/// The kept publications of `topic` from the read script's entries, in
/// ascending offset order: each
/// checked, its position its own. Entries that fail the check are left
/// out (the hub then sees a hole, never a wrong replay) and reported.
pub(crate) fn entries(
    topic: &str,
    epoch: &str,
    raw: Vec<RawEntry>,
    max_message_size: usize,
    mut skipped: impl FnMut(Skipped),
) -> Vec<BrokerMessage> {
    let mut out: Vec<BrokerMessage> = raw
        .into_iter()
        .filter_map(|(_id, fields)| {
            let Some(frame) = fields.last().filter(|_| fields.len() == 2) else {
                skipped(Skipped::Malformed);
                return None;
            };
            if frame.len() > max_message_size {
                skipped(Skipped::Malformed);
                return None;
            }
            let Ok(frame) = wire::decode(topic, frame) else {
                skipped(Skipped::Malformed);
                return None;
            };
            match &frame.message.position {
                Some(p) if p.epoch == epoch => Some(frame.message),
                Some(_) => {
                    skipped(Skipped::OtherEpoch);
                    None
                }
                None => {
                    skipped(Skipped::Malformed);
                    None
                }
            }
        })
        .collect();
    out.sort_by_key(|m| m.position.as_ref().map_or(0, |p: &Position| p.offset));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox::Meta;
    use std::time::Duration;

    fn frame(epoch: &str, offset: u64) -> Vec<u8> {
        let msg = BrokerMessage {
            topic: "t".into(),
            ty: "T".into(),
            meta: Meta::default(),
            payload: None,
            exclude: None,
            compress: false,
            position: None,
        };
        let mut head = wire::encode_positioned_head("n", &msg).expect("encodes");
        wire::append_position(&mut head, &Position::new(epoch, offset));
        head
    }

    fn entry(frame: Vec<u8>) -> RawEntry {
        ("1-0".into(), vec![b"f".to_vec(), frame])
    }

    #[test]
    fn entries_come_back_in_offset_order_and_bad_ones_are_left_out() {
        let raw = vec![
            entry(frame("e", 5)),
            entry(b"junk".to_vec()),
            entry(frame("other", 4)),
            entry(frame("e", 3)),
            entry(vec![0; 100]),
        ];
        let mut skipped = Vec::new();
        let got = entries("t", "e", raw, 64, |s| skipped.push(s));
        let offsets: Vec<u64> = got
            .iter()
            .map(|m| m.position.as_ref().expect("positioned").offset)
            .collect();
        assert_eq!(offsets, vec![3, 5]);
        assert_eq!(
            skipped,
            vec![Skipped::Malformed, Skipped::OtherEpoch, Skipped::Malformed]
        );
    }

    #[test]
    fn read_modes_and_ages() {
        assert_eq!(read_mode(None), "all");
        assert_eq!(read_mode(Some(u64::MAX)), "none");
        assert_eq!(read_mode(Some(42)), "42");
        assert_eq!(age_ms(&HistoryLimits::new(1, Duration::ZERO)), 1);
        assert_eq!(age_ms(&HistoryLimits::new(1, Duration::from_secs(2))), 2000);
        let (a, b) = (new_epoch(), new_epoch());
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
    }
}
