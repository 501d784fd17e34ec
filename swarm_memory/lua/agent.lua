--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell +family(a b c d)
--! args: agent audit_maxlen stream_maxlen dedupe_ms action op_id digest +args
--! returns: {"ok", ...} | {"dup", record} | {"nons"} | {"denied", granted} | {"nosession", state} | {"too_many", limit}
--
-- Agent memory on a namespace (DESIGN.md decision 11): outcome logs and sessions with
-- their decision logs. Permission-checked, deduped by op id, evented and atomic like
-- every write; the statistics and indexes change in the same script as the data.
-- KEYS a b c d by action (all under the namespace's hash tag, named in keys.py):
--   outcome / outcome_stats: a = the log's counters (hash), b = its durations (zset),
--                            c = the namespace's index of outcome logs (zset), d unused
--   session_* / decide / decisions: a = the session (hash), b = its decision log
--                            (stream), c = the namespace's session ids (zset, scores 0,
--                            paged by id), d = their expiry ms (zset, sessions with a TTL)
-- Actions (write ones carry op_id and digest; reads send "" for both):
--   outcome log strategy ok dur_us cost_micro max_strategies event_d event_f   (write)
--   outcome_stats n strategy...   (read) n = 0: every strategy of the log
--   session_open id ttl_ms meta fmt   (write)  session_close id   (write)
--   session_extend id ttl_ms   (write) a new expiry from now ("" : never)
--   decide id payload fmt   (write)   decisions id start count   (read)
--   session_info id   (read)   sessions start count   (read)
--
-- Outcome counters, per strategy s, in hash a: "n:s" records, "ok:s" successes,
-- "c:s" cost in micro-units, "cn:s" records with a cost, "dn:s" records with a
-- duration; "ct" the namespace's creation time (a log of a deleted and re-created
-- namespace is started afresh). Durations in zset b, all scores 0, ordered by member:
-- a sentinel "s\0" then "s\0<16-digit microseconds>\0<op id>" per record, so the k-th
-- smallest duration of s is at rank ZRANK("s\0") + 1 + k: an exact median / p90 in
-- O(log n), under any concurrency (names hold no NUL, so each strategy's members are
-- contiguous).
local agent, audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
local stream_maxlen, dedupe_ms = int_arg(ARGV[3], "stream_maxlen"), int_arg(ARGV[4], "dedupe_ms")
local action, op_id, digest = ARGV[5], ARGV[6], ARGV[7]
local K_A, K_B, K_C, K_D = KEYS[N_FIXED + 1], KEYS[N_FIXED + 2], KEYS[N_FIXED + 3], KEYS[N_FIXED + 4]
local WRITES = { outcome = true, session_open = true, session_close = true, decide = true,
  session_extend = true }
local MAX_SCAN = 100000 -- hash fields read when listing a log's strategies, at most

local meta = load_meta()
if not meta then return { "nons" } end
audit_maxlen, dedupe_ms = stored_limit(meta[3], audit_maxlen), stored_limit(meta[4], dedupe_ms)
local is_write = WRITES[action]
local needed = is_write and LEVEL_RANK.write or LEVEL_RANK.read
local denied = deny_reply(agent, meta[2], needed, action, nil, audit_maxlen)
if denied then return denied end
local now = now_ms()

-- The durations of one strategy: count, then the members at the ranks asked for.
local function nth_durations(s, dn, ranks)
  local out = {}
  if dn == 0 then return out end
  local base = read_call("ZRANK", K_B, s .. "\0")
  if not base then corrupt(K_B, "no sentinel for strategy " .. string.sub(s, 1, 40)) end
  for i, k in ipairs(ranks) do
    local m = read_call("ZRANGE", K_B, base + 1 + k, base + 1 + k)[1]
    local us = m and string.match(m, "^.-%z(%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d)%z")
    if not us or string.sub(m, 1, #s + 1) ~= s .. "\0" then
      corrupt(K_B, "bad duration member for strategy " .. string.sub(s, 1, 40))
    end
    out[i] = us
  end
  return out
end

local function counter(h, field)
  local v = h[field]
  if v == nil then return "0" end
  if not stored_int(v) then corrupt(K_A, "counter " .. string.sub(field, 1, 40) .. " is not an integer") end
  return v
end

-- The namespace's creation time: a log stamped with another one belongs to an earlier
-- incarnation of the namespace (deleted, re-created) and counts as empty.
local function meta_ct()
  return redis.call("HGET", K_META, "ct") or ""
end

if action == "outcome_stats" then
  local n = int_arg(ARGV[8], "n")
  local names = {}
  local h = {}
  local stamp = read_call("HGET", K_A, "ct")
  if stamp ~= nil and stamp == meta_ct() then
    local flat = read_call("HGETALL", K_A)
    if #flat > 2 * MAX_SCAN then corrupt(K_A, "has too many fields") end
    for i = 1, #flat - 1, 2 do h[flat[i]] = flat[i + 1] end
  end
  if n == 0 then
    for f, _ in pairs(h) do
      local s = string.match(f, "^n:(.*)$")
      if s then names[#names + 1] = s end
    end
    table.sort(names)
  else
    for i = 1, n do names[i] = ARGV[8 + i] end
  end
  local reply = { "ok", #names }
  for _, s in ipairs(names) do
    local dn = tonumber(counter(h, "dn:" .. s))
    local ranks = {}
    if dn > 0 then
      ranks = { math.floor((dn - 1) / 2), math.floor(dn / 2), math.floor((9 * dn + 9) / 10) - 1 }
    end
    local d = nth_durations(s, dn, ranks)
    local r = #reply
    reply[r + 1], reply[r + 2], reply[r + 3] = s, counter(h, "n:" .. s), counter(h, "ok:" .. s)
    reply[r + 4], reply[r + 5], reply[r + 6] = counter(h, "c:" .. s), counter(h, "cn:" .. s), itos(dn)
    reply[r + 7], reply[r + 8], reply[r + 9] = d[1] or "", d[2] or "", d[3] or ""
  end
  return reply
end

if action == "decisions" then
  local start, count = ARGV[9], int_arg(ARGV[10], "count")
  local entries = read_call("XRANGE", K_B, start, "+", "COUNT", count)
  return { "ok", entries }
end

if action == "session_info" then
  local h = read_call("HMGET", K_A, "st", "by", "ct", "x", "n", "m", "f", "cl")
  if not h[1] then return { "ok", "" } end
  local x = stored_int(h[4] or "")
  if x and x > 0 and x <= now then return { "ok", "" } end
  return { "ok", h[1], h[2] or "", h[3] or "", h[4] or "", h[5] or "", h[6] or "", h[7] or "", h[8] or "" }
end

if action == "sessions" then
  local start, count = ARGV[8], int_arg(ARGV[9], "count")
  -- Expired sessions are left out here and pruned from the index by the next session
  -- write.
  local ids = read_call("ZRANGEBYLEX", K_C, start, "+", "LIMIT", 0, count)
  local reply = { "ok", #ids == count and ids[#ids] or "" }
  for _, id in ipairs(ids) do
    local raw = read_call("ZSCORE", K_D, id)
    local x = stored_int(raw or "0")
    if not x then corrupt(K_D, "bad expiry for session " .. string.sub(id, 1, 40)) end
    if x == 0 or x > now then
      reply[#reply + 1] = id
      reply[#reply + 1] = x
    end
  end
  return reply
end

if not is_write then error("swarm_memory: unknown agent action " .. tostring(action)) end

-- Writes: a replayed op id returns its first outcome (decision 6).
local previous = read_call("HGET", K_OPS, op_id)
if previous then return { "dup", previous } end

local listed = op_index_listed()
require_kinds({ K_STATS, "hash" })
require_counters(K_STATS, action)
local rev = require_next_revision_room() + 1
local result = ""

local function session_state(id)
  local h = read_call("HMGET", K_A, "st", "by", "x", "n")
  if not h[1] then return nil end
  if (h[1] ~= "open" and h[1] ~= "closed") or not h[2] or not stored_int(h[3] or "") or not stored_int(h[4] or "") then
    corrupt(K_A, "malformed session record")
  end
  local s = { st = h[1], by = h[2], x = stored_int(h[3]), n = stored_int(h[4]) }
  if s.x > 0 and s.x <= now then return nil end
  return s
end

-- Up to 16 expired sessions leave the index per session write (the hash and its log
-- expire by themselves: PEXPIREAT).
local function prune_sessions()
  local gone = read_call("ZRANGEBYSCORE", K_D, "-inf", now, "LIMIT", 0, 16)
  if #gone > 0 then
    redis.call("ZREM", K_C, unpack(gone))
    redis.call("ZREM", K_D, unpack(gone))
  end
end

if action == "outcome" then
  local log, s, ok = ARGV[8], ARGV[9], ARGV[10]
  local dur, cost = opt_int(ARGV[11], "dur_us"), opt_int(ARGV[12], "cost")
  local max_strategies = int_arg(ARGV[13], "max_strategies")
  local d, f = ARGV[14], ARGV[15]
  local stamp = read_call("HGET", K_A, "ct")
  local ct = meta_ct()
  local fresh = stamp ~= ct
  require_kinds({ K_B, "zset", K_C, "zset" })
  if not fresh then
    require_counters(K_A, "n:" .. s, "ok:" .. s, "c:" .. s, "cn:" .. s, "dn:" .. s)
    if not read_call("HGET", K_A, "n:" .. s) then
      local known = read_call("HLEN", K_A)
      if (known - 1) / 5 >= max_strategies then return { "too_many", max_strategies } end
    end
  end
  event("outcome", log, 0, d, f)
  publish_events(stream_maxlen, rev, agent, now, nil, true)
  if fresh then redis.call("DEL", K_A, K_B) redis.call("HSET", K_A, "ct", ct) end
  redis.call("HINCRBY", K_A, "n:" .. s, 1)
  redis.call("HINCRBY", K_A, "ok:" .. s, ok == "1" and 1 or 0)
  if cost then
    redis.call("HINCRBY", K_A, "c:" .. s, cost)
    redis.call("HINCRBY", K_A, "cn:" .. s, 1)
  else
    redis.call("HINCRBY", K_A, "c:" .. s, 0)
    redis.call("HINCRBY", K_A, "cn:" .. s, 0)
  end
  if dur then
    redis.call("ZADD", K_B, 0, s .. "\0", 0, s .. "\0" .. string.format("%016d", dur) .. "\0" .. op_id)
    redis.call("HINCRBY", K_A, "dn:" .. s, 1)
  else
    redis.call("HINCRBY", K_A, "dn:" .. s, 0)
  end
  redis.call("ZADD", K_C, 0, log)
  result = log
elseif action == "session_open" then
  local id, ttl_ms, m, f = ARGV[8], opt_int(ARGV[9], "ttl_ms"), ARGV[10], ARGV[11]
  require_kinds({ K_A, "hash", K_B, "stream", K_C, "zset", K_D, "zset" })
  if session_state(id) then return { "nosession", "exists" } end
  local x = ttl_ms and (now + ttl_ms) or 0
  event("session_open", "_session/" .. id, 0)
  publish_events(stream_maxlen, rev, agent, now, nil, true)
  redis.call("DEL", K_A, K_B) -- an expired session of the same id leaves nothing behind
  redis.call("HSET", K_A, "st", "open", "by", agent, "ct", now, "x", x, "n", 0, "m", m, "f", f)
  if x > 0 then redis.call("PEXPIREAT", K_A, x) end
  prune_sessions()
  redis.call("ZADD", K_C, 0, id)
  if x > 0 then redis.call("ZADD", K_D, x, id) else redis.call("ZREM", K_D, id) end
  result = itos(x) .. " " .. itos(now)
elseif action == "session_close" then
  local id = ARGV[8]
  require_kinds({ K_B, "stream", K_C, "zset", K_D, "zset" })
  local s = session_state(id)
  if not s then return { "nosession", "absent" } end
  if s.st == "closed" then return { "nosession", "closed" } end
  event("session_close", "_session/" .. id, s.n)
  publish_events(stream_maxlen, rev, agent, now, nil, true)
  redis.call("HSET", K_A, "st", "closed", "cl", now)
  prune_sessions()
  result = itos(s.n)
elseif action == "session_extend" then
  local id, ttl_ms = ARGV[8], opt_int(ARGV[9], "ttl_ms")
  require_kinds({ K_B, "stream", K_D, "zset" })
  local s = session_state(id)
  if not s then return { "nosession", "absent" } end
  local x = ttl_ms and (now + ttl_ms) or 0
  event("session_extend", "_session/" .. id, s.n)
  publish_events(stream_maxlen, rev, agent, now, nil, true)
  redis.call("HSET", K_A, "x", x)
  if x > 0 then
    redis.call("PEXPIREAT", K_A, x)
    redis.call("PEXPIREAT", K_B, x) -- no-op while the log is empty (absent)
    redis.call("ZADD", K_D, x, id)
  else
    redis.call("PERSIST", K_A)
    redis.call("PERSIST", K_B)
    redis.call("ZREM", K_D, id)
  end
  result = itos(x)
elseif action == "decide" then
  local id, payload, f = ARGV[8], ARGV[9], ARGV[10]
  require_kinds({ K_B, "stream" })
  require_stream_room(K_B)
  local s = session_state(id)
  if not s then return { "nosession", "absent" } end
  if s.st == "closed" then return { "nosession", "closed" } end
  local seq = s.n + 1
  event("decision", "_session/" .. id, seq)
  publish_events(stream_maxlen, rev, agent, now, nil, true)
  local sid = redis.call("XADD", K_B, "*", "a", agent, "q", seq, "ms", now, "d", payload, "f", f)
  if s.x > 0 then redis.call("PEXPIREAT", K_B, s.x) end
  redis.call("HSET", K_A, "n", seq)
  result = sid .. " " .. itos(seq) .. " " .. itos(now)
end

redis.call("HSET", K_META, "rev", rev)
redis.call("HINCRBY", K_STATS, action, 1)
-- No audit record: a data write's record is its event (DESIGN.md decision 2, revised).
local record = "ag1 " .. (digest == "" and "-" or digest) .. " " .. itos(rev) .. " " .. result
record_op(op_id, record, rev, now, dedupe_ms, listed)
return { "ok", rev, result }
