--! keys: exp seen
--! args: action agent ttl_ms retention_ms
--! returns: {"ok", expires_ms} | {"ok", now_ms, agent, expires_ms, seen_ms, ...} | {"denied", "identity"}
--
-- Agent presence, outside every namespace (its own hash tag {@presence}): heartbeats on
-- the Redis server clock (DESIGN.md decision 4), never the agents'.
--   beat   agent ttl_ms retention_ms  -> {"ok", expires_ms}; forgets agents silent for
--                                        longer than retention_ms (a few per beat)
--   leave  agent                      -> {"ok", now}: presence ends now
--   list                              -> {"ok", now, agent, expires_ms, seen_ms, ...}
-- This script calls no _lib helper that touches namespace keys (it has none of them).
local K_PEXP, K_PSEEN = KEYS[1], KEYS[2]
local action, who = ARGV[1], ARGV[2]
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if action == "beat" then
  local ttl_ms, retention_ms = int_arg(ARGV[3], "ttl_ms"), int_arg(ARGV[4], "retention_ms")
  require_kinds({ K_PEXP, "zset", K_PSEEN, "hash" })
  redis.call("ZADD", K_PEXP, now + ttl_ms, who)
  redis.call("HSET", K_PSEEN, who, now)
  local gone = redis.call("ZRANGEBYSCORE", K_PEXP, "-inf", now - retention_ms, "LIMIT", 0, 16)
  if #gone > 0 then
    redis.call("ZREM", K_PEXP, unpack(gone))
    redis.call("HDEL", K_PSEEN, unpack(gone))
  end
  return { "ok", now + ttl_ms }
end

if action == "leave" then
  if read_call("ZSCORE", K_PEXP, who) then redis.call("ZADD", K_PEXP, now, who) end
  return { "ok", now }
end

if action == "list" then
  local reply = { "ok", now }
  local all = read_call("ZRANGE", K_PEXP, 0, -1, "WITHSCORES")
  for j = 1, #all, 2 do
    reply[#reply + 1] = all[j]
    reply[#reply + 1] = all[j + 1]
    reply[#reply + 1] = read_call("HGET", K_PSEEN, all[j]) or "0"
  end
  return reply
end
error("swarm_memory: unknown presence action " .. tostring(action))
