--! keys: stream ops opst bell
--! args: action agent owner group +args
--! returns: {"ok"|"dup", packed} | {"full", length} | {"ok", cursor, claimed, deliveries, fresh} | {"ok", acked} | {"ok"} | {"denied", "none"}
--
-- One agent's inbox: a stream read through one consumer group, every action atomic.
--   open  gc_idle_ms                      (owner) make the group; forget idle empty consumers
--   send  op_id dedupe_ms maxlen body fmt reply_to correlation_id digest
--                                         (anyone) append; deduped by (sender, op id)
--   read  consumer count idle_ms cursor   (owner) re-take messages other consumers left
--                                         unacknowledged for idle_ms, then new ones
--   ack   id ...                          (owner) acknowledge and delete
-- Only the owner reads or acknowledges. Like namespace permissions this is cooperative:
-- the caller's name is asserted by the client (docs/guarantees.md). Anyone may send.
-- The inbox's keys come in KEYS like every other script's; none is built here.
local K_STREAM, K_IOPS, K_IOPST, K_IBELL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local action, agent, owner, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ARG0 = 4

-- The group is made with the stream (and reads from its start), so a message sent before
-- its owner first reads is still delivered.
local function ensure_group()
  if redis.call("EXISTS", K_STREAM) == 0 then
    redis.call("XGROUP", "CREATE", K_STREAM, group, "0", "MKSTREAM")
  end
end

local function strict_id(s)
  if type(s) ~= "string" or not string.match(s, "^%d+%-%d+$") or #s > 41 then
    error("swarm_memory: bad stream id " .. tostring(s))
  end
  return s
end

if action == "send" then
  local op_id, dedupe_ms, maxlen = ARGV[5], int_arg(ARGV[6], "dedupe_ms"), int_arg(ARGV[7], "maxlen")
  local body, fmt, reply_to, cid, digest = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
  -- Op ids are the sender's: two senders may pick the same one without colliding.
  local op_key = agent .. "|" .. op_id
  local previous = redis.call("HGET", K_IOPS, op_key)
  if previous then return { "dup", previous } end
  -- Acknowledged messages are deleted, so the length is what is still unacknowledged: a
  -- full inbox refuses the send (never drops an undelivered message to make room).
  local length = redis.call("XLEN", K_STREAM)
  if length >= maxlen then return { "full", length } end

  local now = now_ms()
  local stale = redis.call("ZRANGEBYSCORE", K_IOPST, "-inf", now - dedupe_ms, "LIMIT", 0, 16)
  if #stale > 0 then
    redis.call("HDEL", K_IOPS, unpack(stale))
    redis.call("ZREM", K_IOPST, unpack(stale))
  end
  ensure_group()
  local id = redis.call("XADD", K_STREAM, "*", "from", agent, "d", body, "f", fmt,
    "rt", reply_to, "cid", cid, "ms", now)
  local packed = pack({ id, now, digest })
  redis.call("HSET", K_IOPS, op_key, packed)
  redis.call("ZADD", K_IOPST, now, op_key)
  -- A hint for readers that wait; they poll anyway, so a lost doorbell only delays.
  redis.call("SPUBLISH", K_IBELL, id)
  return { "ok", packed }
end

if agent ~= owner then return { "denied", "none" } end

if action == "read" then
  local consumer, count = ARGV[5], int_arg(ARGV[6], "count")
  local idle_ms, cursor = int_arg(ARGV[7], "idle_ms"), strict_id(ARGV[8])
  ensure_group()
  -- Redelivery first: messages pending longer than idle_ms (their consumer died or
  -- stalled) move to this consumer. XAUTOCLAIM scans at most 10 x COUNT pending entries
  -- per call, so follow its cursor a few rounds and hand it back for the next read.
  local claimed, deliveries = {}, {}
  for _ = 1, 4 do
    local r = redis.call("XAUTOCLAIM", K_STREAM, group, consumer, idle_ms, cursor,
      "COUNT", count - #claimed)
    cursor = r[1]
    for _, e in ipairs(r[2]) do
      -- Redis 6.2 reports entries deleted meanwhile as nil (7.x drops them itself).
      if type(e) == "table" then
        claimed[#claimed + 1] = e
        local p = redis.call("XPENDING", K_STREAM, group, e[1], e[1], 1)
        deliveries[#deliveries + 1] = p[1] and p[1][4] or 1
      end
    end
    if cursor == "0-0" or #claimed >= count then break end
  end
  local fresh = {}
  if #claimed < count then
    local r = redis.call("XREADGROUP", "GROUP", group, consumer, "COUNT", count - #claimed,
      "STREAMS", K_STREAM, ">")
    -- Redis replies {{stream, entries}}; fakeredis drops the outer array (one stream).
    if r and type(r[1]) == "table" then
      fresh = r[1][2]
    elseif r and r[2] then
      fresh = r[2]
    end
  end
  return { "ok", cursor, claimed, deliveries, fresh }
elseif action == "ack" then
  -- Only ids this group really had pending are deleted: an id that was never delivered
  -- (or a made-up one) must not remove an unread message.
  local acked = {}
  for i = ARG0 + 1, #ARGV do
    local id = strict_id(ARGV[i])
    if redis.call("XACK", K_STREAM, group, id) == 1 then acked[#acked + 1] = id end
  end
  if #acked > 0 then redis.call("XDEL", K_STREAM, unpack(acked)) end
  return { "ok", #acked }
elseif action == "open" then
  local gc_idle_ms = int_arg(ARGV[5], "gc_idle_ms")
  ensure_group()
  -- Every process reads under its own consumer name: forget the ones that hold nothing
  -- and have not read for gc_idle_ms, so the group does not grow without bound.
  for _, c in ipairs(redis.call("XINFO", "CONSUMERS", K_STREAM, group)) do
    local f = {}
    for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
    if tonumber(f.pending) == 0 and tonumber(f.idle) > gc_idle_ms then
      redis.call("XGROUP", "DELCONSUMER", K_STREAM, group, f.name)
    end
  end
  return { "ok" }
end
error("swarm_memory: unknown inbox action " .. tostring(action))
