--! keys: lane ops opst senders
--! args: agent retention_ms op_id dedupe_ms maxlen body fmt reply_to correlation_id digest
--! returns: {"ok"|"dup", packed} | {"full", length} | {"denied", "none"}
--
-- A send into the sender's lane of another agent's inbox (authenticated mode: the
-- sender's ACL user may write its own lanes, never the owner's stream; keys.InboxKeys).
-- The lane's key names the sender, so the sender cannot be forged: the owner's next read
-- (lua/inbox.lua, "read") moves the lane's messages into its stream with "from" taken
-- from the lane's name, never from the data. Deduped by op id per sender (the lane's own
-- op records); a lane holding `maxlen` undelivered messages refuses the send ("full").
-- The senders set tells the owner which lanes to look at; no doorbell is rung (the
-- sender may not publish on the owner's channel; the owner's reads poll).
local K_LANE, K_LOPS, K_LOPST, K_SENDERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local agent, retention_ms = ARGV[1], int_arg(ARGV[2], "retention_ms")
local op_id, dedupe_ms, maxlen = ARGV[3], int_arg(ARGV[4], "dedupe_ms"), int_arg(ARGV[5], "maxlen")
local body, fmt, reply_to, cid, digest = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
-- The lane must be the calling agent's own (the identity check proved who calls).
if string.sub(K_LANE, -#agent - 8) ~= ":lane:s:" .. agent then return { "denied", "none" } end

require_kinds({ K_LANE, "stream", K_LOPS, "hash", K_LOPST, "zset", K_SENDERS, "set" })
local previous = redis.call("HGET", K_LOPS, op_id)
if previous then return { "dup", previous } end
local length = redis.call("XLEN", K_LANE)
if length >= maxlen then return { "full", length } end
require_stream_room(K_LANE)

local now = now_ms()
local stale = redis.call("ZRANGEBYSCORE", K_LOPST, "-inf", now - dedupe_ms, "LIMIT", 0, 16)
if #stale > 0 then
  redis.call("HDEL", K_LOPS, unpack(stale))
  redis.call("ZREM", K_LOPST, unpack(stale))
end
local id = redis.call("XADD", K_LANE, "*", "d", body, "f", fmt, "rt", reply_to, "cid", cid, "ms", now)
local packed = pack({ id, now, digest })
redis.call("HSET", K_LOPS, op_id, packed)
redis.call("ZADD", K_LOPST, now, op_id)
redis.call("SADD", K_SENDERS, agent)
for _, k in ipairs({ K_LANE, K_LOPS, K_LOPST, K_SENDERS }) do
  if retention_ms > 0 then redis.call("PEXPIRE", k, retention_ms) else redis.call("PERSIST", k) end
end
return { "ok", packed }
