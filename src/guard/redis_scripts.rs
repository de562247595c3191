//! The Lua scripts of the cluster-wide scope and their typed calls and replies.
//!
//! Each decision is one script run, atomic on the Redis server, so replicas sharing a
//! Redis see one count. Time comes from the server (`TIME`), not from the replicas,
//! whose clocks may disagree. The scripts compute exactly what the local limiters do
//! (`ip_table` for the rolling window, governor's GCRA for services), so a fallback
//! to local decisions changes where counts live, not the rules.

use std::time::Duration;

use redis::{Script, ScriptInvocation};

use super::ip_table::{IpDecision, WindowRule};
use super::login::{LoginRule, LoginScope};
use super::service_limit::GcraOutcome;

/// Rolling window and block of one client (see `ip_table` for the algorithm).
///
/// KEYS[1]: the client's hash (`b` bucket, `p` previous count, `c` current count,
/// `u` block end in ms). ARGV: window ms, limit, block ms.
/// Reply: `{0, 0}` allowed, `{1, block_ms}` crossed the limit and now blocked,
/// `{2, ms_left}` blocked.
const IP_WINDOW: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local block = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'b', 'p', 'c', 'u')
local blocked_until = tonumber(state[4]) or 0
if blocked_until > now then
  return {2, blocked_until - now}
end
local bucket = math.floor(now / window)
local last = tonumber(state[1]) or bucket
local prev = tonumber(state[2]) or 0
local curr = tonumber(state[3]) or 0
if last ~= bucket then
  if last + 1 == bucket then prev = curr else prev = 0 end
  curr = 0
end
local into = now - bucket * window
if prev * (window - into) + (curr + 1) * window > limit * window then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'u', string.format('%.0f', now + block))
  redis.call('PEXPIRE', KEYS[1], block)
  return {1, block}
end
redis.call('HSET', KEYS[1], 'b', string.format('%.0f', bucket), 'p', prev, 'c', curr + 1)
redis.call('PEXPIRE', KEYS[1], 2 * window)
return {0, 0}
";

/// GCRA of one service, in microseconds.
///
/// KEYS[1]: the theoretical arrival time (TAT). ARGV: emission interval µs, burst.
/// Reply: `{1, remaining}` allowed, `{0, wait_us}` refused until `wait_us` from now.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > tolerance then
  return {0, next_tat - tolerance - now}
end
local ttl_ms = math.ceil((next_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return {1, math.floor((tolerance - (next_tat - now)) / interval)}
";

/// Whether either login key is locked.
///
/// KEYS[1]: the (account, client) hash, KEYS[2]: the account hash (see
/// `login::Entry`: `f` failures, `w` window end, `s` strikes, `u` lock end, in ms).
/// Reply: `{0, 0}` not locked, `{1, ms_left}` / `{2, ms_left}` the first / second key is.
const LOGIN_LOCKED: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 1, 2 do
  local u = tonumber(redis.call('HGET', KEYS[i], 'u')) or 0
  if u > now then return {i, u - now} end
end
return {0, 0}
";

/// One failed login counted on both keys (the algorithm of `login::LoginRule::fail`).
///
/// KEYS as in [`LOGIN_LOCKED`]. ARGV: failures, window ms, lockout ms, max lockout ms
/// of the first key, then of the second. Reply: `{lock_ms_1, lock_ms_2}`, 0 where the
/// failure started no lock.
const LOGIN_FAILED: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function fail(key, limit, window, lockout, maxlock)
  local st = redis.call('HMGET', key, 'f', 'w', 's', 'u')
  local f = tonumber(st[1]) or 0
  local w = tonumber(st[2]) or 0
  local s = tonumber(st[3]) or 0
  local u = tonumber(st[4]) or 0
  if now >= w then
    f = 0
    w = now + window
  end
  f = f + 1
  local locked = 0
  if f >= limit then
    s = s + 1
    locked = lockout * math.pow(2, math.min(s - 1, 40))
    if locked > maxlock then locked = maxlock end
    u = now + locked
    f = 0
    w = 0
  end
  redis.call('HSET', key, 'f', f, 'w', string.format('%.0f', w), 's', s,
    'u', string.format('%.0f', u))
  redis.call('PEXPIRE', key, string.format('%.0f', math.max(w, u + window) - now))
  return locked
end
local a = fail(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
local b = fail(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
return {a, b}
";

/// A successful login: both keys forgotten. Reply: the number of keys deleted.
const LOGIN_RESET: &str = r"
return redis.call('DEL', KEYS[1], KEYS[2])
";

/// The loaded scripts (their SHA1 is computed once; redis-rs sends `EVALSHA` and
/// falls back to `EVAL` after a server restart flushed the script cache).
pub(crate) struct Scripts {
    ip_window: Script,
    gcra: Script,
    login_locked: Script,
    login_failed: Script,
    login_reset: Script,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts")
            .field("ip_window", &self.ip_window.get_hash())
            .field("gcra", &self.gcra.get_hash())
            .finish()
    }
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            ip_window: Script::new(IP_WINDOW),
            gcra: Script::new(GCRA),
            login_locked: Script::new(LOGIN_LOCKED),
            login_failed: Script::new(LOGIN_FAILED),
            login_reset: Script::new(LOGIN_RESET),
        }
    }

    /// One request of the client stored at `key`.
    pub(crate) fn ip_window(&self, key: &str, rule: &WindowRule) -> ScriptInvocation<'_> {
        let mut call = self.ip_window.key(key);
        call.arg(rule.window_ms).arg(rule.limit).arg(rule.block_ms);
        call
    }

    /// One request of the service stored at `key`.
    pub(crate) fn gcra(&self, key: &str, interval_us: u64, burst: u32) -> ScriptInvocation<'_> {
        let mut call = self.gcra.key(key);
        call.arg(interval_us).arg(burst);
        call
    }
}

impl Scripts {
    /// Whether the login keys `keys` are locked.
    pub(crate) fn login_locked(&self, keys: &[String; 2]) -> ScriptInvocation<'_> {
        let mut call = self.login_locked.key(&keys[0]);
        call.key(&keys[1]);
        call
    }

    /// One failed login on `keys`, with each key's rule.
    pub(crate) fn login_failed(
        &self,
        keys: &[String; 2],
        rules: [&LoginRule; 2],
    ) -> ScriptInvocation<'_> {
        let mut call = self.login_failed.key(&keys[0]);
        call.key(&keys[1]);
        for rule in rules {
            call.arg(rule.failures)
                .arg(rule.window_ms)
                .arg(rule.lockout_ms)
                .arg(rule.max_lockout_ms);
        }
        call
    }

    /// A successful login on `keys`.
    pub(crate) fn login_reset(&self, keys: &[String; 2]) -> ScriptInvocation<'_> {
        let mut call = self.login_reset.key(&keys[0]);
        call.key(&keys[1]);
        call
    }
}

/// Reads the reply of [`LOGIN_LOCKED`]: `Some(None)` not locked, `Some(Some(..))` the
/// scope locked and the time left; `None` for a reply the script cannot give.
pub(crate) fn login_lock((which, millis): (i64, i64)) -> Option<Option<(LoginScope, u64)>> {
    let millis = u64::try_from(millis).ok()?;
    match which {
        0 => Some(None),
        1 => Some(Some((LoginScope::AccountIp, millis))),
        2 => Some(Some((LoginScope::Account, millis))),
        _ => None,
    }
}

/// Reads the reply of [`IP_WINDOW`]; `None` for a reply the script cannot give.
pub(crate) fn ip_decision((verdict, millis): (i64, i64)) -> Option<IpDecision> {
    let retry_after = Duration::from_millis(u64::try_from(millis).ok()?);
    match verdict {
        0 => Some(IpDecision::Allowed),
        1 => Some(IpDecision::Limited { retry_after }),
        2 => Some(IpDecision::Blocked { retry_after }),
        _ => None,
    }
}

/// Reads the reply of [`GCRA`]; `None` for a reply the script cannot give.
pub(crate) fn gcra_outcome((allowed, value): (i64, i64)) -> Option<GcraOutcome> {
    let value = u64::try_from(value).ok()?;
    match allowed {
        1 => Some(GcraOutcome::Allowed {
            remaining: u32::try_from(value).unwrap_or(u32::MAX),
        }),
        0 => Some(GcraOutcome::Denied {
            retry_after: Duration::from_micros(value),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_and_nonsense_is_refused() {
        assert_eq!(ip_decision((0, 0)), Some(IpDecision::Allowed));
        assert_eq!(
            ip_decision((1, 60_000)),
            Some(IpDecision::Limited {
                retry_after: Duration::from_secs(60)
            })
        );
        assert_eq!(
            ip_decision((2, 1500)),
            Some(IpDecision::Blocked {
                retry_after: Duration::from_millis(1500)
            })
        );
        assert_eq!(ip_decision((3, 0)), None);
        assert_eq!(ip_decision((2, -1)), None);
        assert_eq!(
            gcra_outcome((1, 7)),
            Some(GcraOutcome::Allowed { remaining: 7 })
        );
        assert_eq!(
            gcra_outcome((0, 2500)),
            Some(GcraOutcome::Denied {
                retry_after: Duration::from_micros(2500)
            })
        );
        assert_eq!(gcra_outcome((5, 1)), None);
    }

    #[test]
    fn scripts_have_distinct_hashes() {
        let scripts = Scripts::new();
        assert_ne!(scripts.ip_window.get_hash(), scripts.gcra.get_hash());
        assert_eq!(scripts.ip_window.get_hash().len(), 40);
    }
}
