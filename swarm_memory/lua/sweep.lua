--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell +items(entry hist)
--! args: agent audit_maxlen stream_maxlen batch +items(key)
--! returns: {"ok", n_expired, leases_due, expired..., next_candidates...} | {"nons"} | {"denied", granted}
--
-- The sweeper: removes entries whose expiry has passed from every index, with an
-- "expire" event each (keyspace notifications are lossy and off by default, so expiry is
-- made visible here). Candidates come from the expiry index; names cannot be built in Lua,
-- so each call returns the next due names for the caller to pass back. Each candidate is
-- re-checked against server time, so a stale candidate list is harmless.
local agent, audit_maxlen, stream_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen"), int_arg(ARGV[3], "stream_maxlen")
local batch = int_arg(ARGV[4], "batch")
local meta = load_meta()
if not meta then return { "nons" } end
audit_maxlen = stored_limit(meta[3], audit_maxlen) -- the namespace's retention
local denied = deny_reply(agent, meta[2], LEVEL_RANK.read, "sweep", nil, audit_maxlen)
if denied then return denied end
local now = now_ms()

-- Every candidate is read (and every key written below checked) before the first write:
-- a corrupt one fails the call with nothing changed.
local found = {}
for j = 1, (#KEYS - N_FIXED) / 2 do
  local live, is_expired, e = read_entry(KEYS[N_FIXED + 2 * j - 1], now)
  found[j] = { live, is_expired, e }
end
require_kinds({ K_IDX, "zset", K_LRU, "zset", K_EXP, "zset", K_EPH, "zset", K_STATS, "hash" })
require_counters(K_STATS, "expired")
require_counters(K_META, "n", "b") -- drop_entry adjusts them
require_next_revision_room()

local expired, rev = {}, nil
for j = 1, (#KEYS - N_FIXED) / 2 do
  local name = ARGV[4 + j]
  local ekey, hkey = KEYS[N_FIXED + 2 * j - 1], KEYS[N_FIXED + 2 * j]
  local live, is_expired, e = found[j][1], found[j][2], found[j][3]
  if is_expired then
    if not rev then rev = redis.call("HINCRBY", K_META, "rev", 1) end
    drop_entry(name, ekey, hkey, #e.v)
    event("expire", name, e.ver)
    expired[#expired + 1] = name
  elseif not live and redis.call("ZSCORE", K_EXP, name) and redis.call("EXISTS", ekey) == 0 then
    redis.call("ZREM", K_EXP, name) -- an index entry without its entry: never keep it
  end
end
if #expired > 0 then
  publish_events(stream_maxlen, rev, agent, now)
  redis.call("HINCRBY", K_STATS, "expired", #expired)
end

-- leases_due: 1 when some agent's lease here ran out, so the caller runs the reaper
-- (lua/reap.lua) next; 0 spares it that round trip.
local reply = { "ok", #expired, math.floor(sweep_due(now) / 2) }
for _, name in ipairs(expired) do reply[#reply + 1] = name end
for _, name in ipairs(redis.call("ZRANGEBYSCORE", K_EXP, "-inf", now, "LIMIT", 0, batch)) do
  reply[#reply + 1] = name
end
return reply
