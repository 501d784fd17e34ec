--! keys: stream ops opst bell meta senders +lanes(lane)
--! args: action agent owner group retention_ms +args
--! returns: {"ok"|"dup", packed[, new]} | {"full", length} | {"ok", cursor, claimed, deliveries, fresh, senders, new} | {"ok", acked} | {"ok", exists} | {"ok", length, pending, active_ms, expires_ms} | {"none"} | {"ok", existed, length} | {"denied", "none"}
--
-- One agent's inbox: a stream read through one consumer group, every action atomic.
--   send  op_id dedupe_ms maxlen body fmt reply_to correlation_id digest
--                                         (anyone) append; deduped by (sender, op id)
--   info                                  (anyone) length, pending, last activity, expiry
--   open  gc_idle_ms                      (owner) forget idle empty consumers
--   read  consumer count idle_ms cursor sender...
--                                         (owner) move the given senders' lanes (KEYS
--                                         +lanes, lua/lane.lua) into the stream, then
--                                         re-take messages other consumers left
--                                         unacknowledged for idle_ms, then new ones;
--                                         replies the senders whose lanes may hold more
--                                         and whether the moves made the inbox
--   ack   id ...                          (owner) acknowledge and delete
--   delete                                (owner) remove every key of the inbox
-- Only the owner reads, acknowledges or deletes; the identity check (_lib.lua) proves
-- the caller in authenticated mode, where other agents' users may not touch these keys
-- at all and send through their lanes instead. Anyone may send, and anyone may see an
-- inbox's counters (never its messages), as anyone may list agents.
--
-- Only a send creates keys: reading, acknowledging or inspecting an inbox that does not
-- exist leaves it absent. Every action that finds the inbox refreshes its retention:
-- every key it owns expires retention_ms after the last activity (0 = never), so an
-- abandoned inbox disappears whole. The global index of inboxes lives in another slot;
-- the client keeps it (see _inbox.py), using the "new" flag a send returns.
-- The inbox's keys come in KEYS like every other script's; none is built here.
local K_STREAM, K_IOPS, K_IOPST, K_IBELL, K_IMETA = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_SENDERS, N_INBOX = KEYS[6], 6
local action, agent, owner, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retention_ms = int_arg(ARGV[5], "retention_ms")
local ARG0 = 5

-- The keys the inbox owns, with the type each must have (the bell is a channel, not a key).
local OWNED = { K_STREAM, K_IOPS, K_IOPST, K_IMETA }
local KIND = { [K_STREAM] = "stream", [K_IOPS] = "hash", [K_IOPST] = "zset", [K_IMETA] = "hash" }

-- Whether any key of the inbox exists. A key of the wrong type is an error naming it,
-- raised before anything is written (never a WRONGTYPE halfway through an action).
local function inbox_exists()
  local found = false
  for _, k in ipairs(OWNED) do
    local t = type_of(k)
    if t ~= "none" then
      if t ~= KIND[k] then corrupt(k, "holds a " .. tostring(t) .. ", not a " .. KIND[k]) end
      found = true
    end
  end
  return found
end

-- Record activity and restart the retention clock of every key. Returns 1 if the inbox
-- had no activity record yet (just created, or made by an earlier version): the client
-- then adds it to the index.
local function touch(now)
  redis.call("HSET", K_IMETA, "at", now)
  local new = redis.call("HSETNX", K_IMETA, "ct", now)
  for _, k in ipairs(OWNED) do
    if retention_ms > 0 then
      redis.call("PEXPIRE", k, retention_ms)
    else
      redis.call("PERSIST", k)
    end
  end
  return new
end

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
  local op_id, dedupe_ms, maxlen = ARGV[6], int_arg(ARGV[7], "dedupe_ms"), int_arg(ARGV[8], "maxlen")
  local body, fmt, reply_to, cid, digest = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
  inbox_exists()
  -- Op ids are the sender's: two senders may pick the same one without colliding.
  local op_key = agent .. "|" .. op_id
  local previous = redis.call("HGET", K_IOPS, op_key)
  if previous then return { "dup", previous } end
  -- Acknowledged messages are deleted, so the length is what is still unacknowledged: a
  -- full inbox refuses the send (never drops an undelivered message to make room).
  local length = redis.call("XLEN", K_STREAM)
  if length >= maxlen then return { "full", length } end
  require_stream_room(K_STREAM) -- its XADD comes after other writes

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
  local new = touch(now)
  -- A hint for readers that wait; they poll anyway, so a lost doorbell only delays.
  redis.call("SPUBLISH", K_IBELL, id)
  return { "ok", packed, new }
end

if action == "info" then
  if not inbox_exists() then return { "none" } end
  local now = now_ms()
  local length, pending, probe = 0, 0, K_IMETA
  if redis.call("EXISTS", K_STREAM) == 1 then
    probe = K_STREAM
    length = redis.call("XLEN", K_STREAM)
    local p = redis.pcall("XPENDING", K_STREAM, group)
    if type(p) ~= "table" or p.err then
      corrupt(K_STREAM, "has no consumer group " .. group)
    end
    pending = p[1]
  end
  local active = redis.call("HGET", K_IMETA, "at") or ""
  local ttl = redis.call("PTTL", probe)
  return { "ok", length, pending, active, ttl > 0 and now + ttl or 0 }
end

if agent ~= owner then return { "denied", "none" } end

-- Lanes: each sender's lane is written only by that sender's ACL user, so its name is
-- the proof of the sender. Their messages move into the stream, in lane order, at most
-- LANE_BATCH per lane per read; "from" is the lane's sender, never the lane's data
-- (which its sender may have written raw): entries without a body or a format are
-- dropped. A sender whose lane is empty (or of the wrong type: its sender's doing) leaves
-- the senders set, and so do members that are no agent name. The set is a hint written
-- by every sender: the senders still in it are replied, for the client's next read.
local LANE_BATCH, SENDERS_SHOWN = 256, 32
local function valid_name(name)
  return #name <= 128 and string.find(name, "^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$") ~= nil
end

local function drain_lanes(first_name)
  local base = string.sub(K_STREAM, 1, #K_STREAM - #"stream")
  local now = now_ms()
  if #KEYS > N_INBOX then require_stream_room(K_STREAM) end -- before the first move
  for i = N_INBOX + 1, #KEYS do
    local sender, lane = ARGV[first_name + i - N_INBOX - 1], KEYS[i]
    if sender == nil or lane ~= base .. "lane:s:" .. sender or not valid_name(sender) then
      error("swarm_memory: lane " .. tostring(lane) .. " is not the lane of " .. tostring(sender))
    end
    local t = type_of(lane)
    if t == "stream" then
      local entries = redis.call("XRANGE", lane, "-", "+", "COUNT", LANE_BATCH)
      for _, e in ipairs(entries) do
        local f = {}
        for j = 1, math.min(#e[2], 32), 2 do f[e[2][j]] = e[2][j + 1] end
        if f.d and f.f then
          ensure_group()
          -- the send's server time, as its sender's lane holds it: never past now
          local sent = math.min(stored_int(f.ms) or now, now)
          redis.call("XADD", K_STREAM, "*", "from", sender, "d", f.d, "f", f.f, "rt", f.rt or "",
            "cid", f.cid or "", "ms", itos(sent))
        end
        redis.call("XDEL", lane, e[1])
      end
      if redis.call("XLEN", lane) == 0 then redis.call("SREM", K_SENDERS, sender) end
    else
      if t ~= "none" then redis.call("DEL", lane) end
      redis.call("SREM", K_SENDERS, sender)
    end
  end
  local kind = type_of(K_SENDERS)
  if kind ~= "set" then
    if kind ~= "none" then redis.call("DEL", K_SENDERS) end -- a sender's doing: only a hint
    return {}
  end
  local shown = {}
  for _, name in ipairs(redis.call("SRANDMEMBER", K_SENDERS, SENDERS_SHOWN)) do
    if valid_name(name) then shown[#shown + 1] = name else redis.call("SREM", K_SENDERS, name) end
  end
  return shown
end

if action == "read" then
  local consumer, count = ARGV[6], int_arg(ARGV[7], "count")
  local idle_ms, cursor = int_arg(ARGV[8], "idle_ms"), strict_id(ARGV[9])
  inbox_exists() -- the owned keys' types, checked before the lanes' moves write
  local senders = drain_lanes(10)
  -- No stream, nothing to read: and reading must not create one.
  if not inbox_exists() or redis.call("EXISTS", K_STREAM) == 0 then
    return { "ok", cursor, {}, {}, {}, senders, 0 }
  end
  -- Redelivery first: messages pending longer than idle_ms (their consumer died or
  -- stalled) move to this consumer. XAUTOCLAIM scans at most 10 x COUNT pending entries
  -- per call, so follow its cursor a few rounds and hand it back for the next read.
  local claimed, deliveries = {}, {}
  for _ = 1, 4 do
    -- A stream without the group (made by someone else's XADD) fails here, first.
    local r = redis.pcall("XAUTOCLAIM", K_STREAM, group, consumer, idle_ms, cursor,
      "COUNT", count - #claimed)
    if r.err then corrupt(K_STREAM, "has no consumer group " .. group) end
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
  local new = touch(now_ms()) -- 1: lanes' messages just made the inbox (the client lists it)
  return { "ok", cursor, claimed, deliveries, fresh, senders, new }
elseif action == "ack" then
  local ids = {}
  for i = ARG0 + 1, #ARGV do ids[#ids + 1] = strict_id(ARGV[i]) end
  if not inbox_exists() or redis.call("EXISTS", K_STREAM) == 0 then return { "ok", 0 } end
  -- Only ids this group really had pending are deleted: an id that was never delivered
  -- (or a made-up one) must not remove an unread message.
  local acked = {}
  for _, id in ipairs(ids) do
    if redis.call("XACK", K_STREAM, group, id) == 1 then acked[#acked + 1] = id end
  end
  if #acked > 0 then redis.call("XDEL", K_STREAM, unpack(acked)) end
  touch(now_ms())
  return { "ok", #acked }
elseif action == "open" then
  local gc_idle_ms = int_arg(ARGV[6], "gc_idle_ms")
  if not inbox_exists() then return { "ok", 0 } end
  if redis.call("EXISTS", K_STREAM) == 1 then
    -- Every process reads under its own consumer name: forget the ones that hold nothing
    -- and have not read for gc_idle_ms, so the group does not grow without bound.
    local consumers = redis.pcall("XINFO", "CONSUMERS", K_STREAM, group)
    if consumers.err then corrupt(K_STREAM, "has no consumer group " .. group) end
    for _, c in ipairs(consumers) do
      local f = {}
      for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
      if tonumber(f.pending) == 0 and tonumber(f.idle) > gc_idle_ms then
        redis.call("XGROUP", "DELCONSUMER", K_STREAM, group, f.name)
      end
    end
  end
  touch(now_ms())
  return { "ok", 1 }
elseif action == "delete" then
  if not inbox_exists() then return { "ok", 0, 0 } end
  local length = redis.call("XLEN", K_STREAM)
  redis.call("DEL", K_STREAM, K_IOPS, K_IOPST, K_IMETA, K_SENDERS)
  return { "ok", 1, length }
end
error("swarm_memory: unknown inbox action " .. tostring(action))
