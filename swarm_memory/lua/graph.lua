--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell gmeta nodes facts gix conf gexp adj weights bundles
--! args: agent action op_id digest dedupe_ms stream_maxlen audit_maxlen event_value_max +args
--! returns: {"ok", ...} | {"dup", record, sweep_due} | {"nons"} | {"denied", granted} | {"conflict", record} | {"duplicate", id} | {"missing", id} | {"bad_kind", kind} | {"too_many", what, limit}
--
-- The memory graph of one namespace (DESIGN.md decision 11): every graph key is a fixed
-- name under the namespace's hash tag (keys.GraphKeys), so no call names a key by a node,
-- agent or tag and every call touches one slot. Each write is permission-checked,
-- deduped by op id, bumps the namespace revision, appends its events to the namespace's
-- stream and changes the indexes in the same script as the data.
--
--   nodes   hash  id -> packed node record (see NODE below); content is opaque JSON text,
--                 never decoded here (decision 9)
--   facts   hash  "<kind>\0<context>\0<content hash>" -> id: one node per fact
--   gix     zset  scores 0, lexicographic index members, "<dim>\0<value>\0<ct15>\0<id>":
--                 dim t (time: no value part), a (agent), c (context), k (kind), g (tag);
--                 every range is ordered by (created ms, id)
--   conf    zset  id -> confidence
--   gexp    zset  id -> expires ms; its earliest is mirrored into the namespace expiry
--                 index under the member "\0graph" so the namespace sweeper runs for it
--   adj     zset  scores 0, "<a>\0>\0<kind>\0<b>" and "<b>\0<\0<kind>\0<a>" per link
--   weights hash  "<a>\0<kind>\0<b>" -> weight text
--   bundles zset  scores 0, "b\0<bundle>\0<id>" and "n\0<id>\0<bundle>" per member
--   gmeta   hash  kinds (packed declared link kinds; absent = any), n (nodes)
--
-- Actions (args after the fixed ones):
--   config  kinds_packed                                   (admin)
--   add     id context kind conf tags_packed vf ia ttl_ms chash content event_payload_max
--   update  id expected fields... (name value pairs)       (write)
--   delete  id expected                                    (write)
--   link    a b kind weight payload  / unlink a b kind      (write)
--   bundle  name op(add|remove) id...                      (write)
--   get id...  recall ...  neighbors ...  bundle_list ...  stats   (read)
--   sweep   batch                                          (read: like lua/sweep.lua)
local K_GMETA, K_NODES, K_FACTS, K_GIX, K_CONF, K_GEXP, K_ADJ, K_W, K_BUN =
  KEYS[17], KEYS[18], KEYS[19], KEYS[20], KEYS[21], KEYS[22], KEYS[23], KEYS[24], KEYS[25]
local agent, action, op_id, digest = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local dedupe_ms = int_arg(ARGV[5], "dedupe_ms")
local stream_maxlen, audit_maxlen = int_arg(ARGV[6], "stream_maxlen"), int_arg(ARGV[7], "audit_maxlen")
local event_value_max = int_arg(ARGV[8], "event_value_max")
local A0 = 8
local MARKER = "\0graph"
local MAX_TAGS, MAX_DEGREE, MAX_BUNDLES_PER_NODE = 64, 10000, 1000

local meta = load_meta()
if not meta then return { "nons" } end
audit_maxlen = stored_limit(meta[3], audit_maxlen)
dedupe_ms = stored_limit(meta[4], dedupe_ms)

local NEEDS = { config = LEVEL_RANK.admin, get = LEVEL_RANK.read, recall = LEVEL_RANK.read,
  neighbors = LEVEL_RANK.read, bundle_list = LEVEL_RANK.read, stats = LEVEL_RANK.read,
  sweep = LEVEL_RANK.read }
local denied = deny_reply(agent, meta[2], NEEDS[action] or LEVEL_RANK.write, "graph_" .. action,
  ARGV[A0 + 1], audit_maxlen)
if denied then return denied end
local now = now_ms()

local function pad(ms) return string.format("%015d", ms) end

-- NODE: the packed record, field by field (the client's _ops/graph.py reads the same).
--   1 "n1"  2 ver  3 agent  4 context  5 kind  6 conf  7 tags (packed)  8 valid_from
--   9 invalid_at  10 expires ms (0: never)  11 created ms  12 updated ms  13 create rev
--   14 mod rev  15 updated by  16 content hash  17 content (JSON text, opaque)
local function parse_node(id, raw)
  local f = unpack_list(raw, K_NODES, 17)
  if #f ~= 17 or f[1] ~= "n1" then corrupt(K_NODES, "node " .. id .. " is not a node record") end
  local n = { id = id, ver = stored_int(f[2]), agent = f[3], context = f[4], kind = f[5],
    conf = tonumber(f[6]), conf_text = f[6], tags_raw = f[7], vf = f[8], ia = f[9], x = stored_int(f[10]),
    ct = stored_int(f[11]), mt = stored_int(f[12]), cr = stored_int(f[13]), mr = stored_int(f[14]),
    by = f[15], chash = f[16], content = f[17], raw = raw }
  if not (n.ver and n.x and n.ct and n.mt and n.cr and n.mr and n.conf) or n.ver < 1
    or n.conf ~= n.conf or n.conf < 0 or n.conf > 1 then
    corrupt(K_NODES, "node " .. id .. " has a malformed field")
  end
  n.tags = unpack_list(n.tags_raw, K_NODES, MAX_TAGS)
  return n
end

-- The live node or nil; expired (but not yet swept) nodes read as absent.
local function live_node(id)
  local raw = read_call("HGET", K_NODES, id)
  if not raw then return nil end
  local n = parse_node(id, raw)
  if n.x > 0 and n.x <= now then return nil, n end
  return n
end

local function node_record(n)
  return pack({ "n1", n.ver, n.agent, n.context, n.kind, n.conf_text, n.tags_raw, n.vf,
    n.ia, n.x, n.ct, n.mt, n.cr, n.mr, n.by, n.chash, n.content })
end

local function index_members(n)
  local tail = "\0" .. pad(n.ct) .. "\0" .. n.id
  local m = { "t" .. tail, "a\0" .. n.agent .. tail, "c\0" .. n.context .. tail, "k\0" .. n.kind .. tail }
  for _, tag in ipairs(n.tags) do m[#m + 1] = "g\0" .. tag .. tail end
  return m
end

local function fact_of(n) return n.kind .. "\0" .. n.context .. "\0" .. n.chash end

-- Whether the op ids' purge index is a list (op_index_listed), for finish().
local ops_listed

-- Every key a graph write may touch holds its kind, and the counters it bumps are
-- integers: checked before the first write (decision 2: Redis does not roll back).
local function require_graph_kinds()
  require_kinds({ K_GMETA, "hash", K_NODES, "hash", K_FACTS, "hash", K_GIX, "zset", K_CONF, "zset",
    K_GEXP, "zset", K_ADJ, "zset", K_W, "hash", K_BUN, "zset", K_EXP, "zset", K_STATS, "hash",
    K_OPS, "hash", K_LEASE, "zset" })
  ops_listed = op_index_listed()
  if action == "config" then require_kinds({ K_AUDIT, "stream" }) end
  require_counters(K_STATS, "graph_" .. action, "expired")
  require_counters(K_GMETA, "n")
  return require_next_revision_room()
end

-- The namespace expiry index carries the graph's earliest expiry under MARKER.
local function sync_marker()
  local first = redis.call("ZRANGE", K_GEXP, 0, 0, "WITHSCORES")
  if first[2] then
    redis.call("ZADD", K_EXP, first[2], MARKER)
  else
    redis.call("ZREM", K_EXP, MARKER)
  end
end

local function write_indexes(n)
  for _, m in ipairs(index_members(n)) do redis.call("ZADD", K_GIX, 0, m) end
  redis.call("ZADD", K_CONF, n.conf_text, n.id) -- the text: a Lua number goes as %.14g
  if n.x > 0 then redis.call("ZADD", K_GEXP, n.x, n.id) else redis.call("ZREM", K_GEXP, n.id) end
  redis.call("HSET", K_FACTS, fact_of(n), n.id)
end

local function drop_indexes(n)
  redis.call("ZREM", K_GIX, unpack(index_members(n)))
  redis.call("ZREM", K_CONF, n.id)
  redis.call("ZREM", K_GEXP, n.id)
  if redis.call("HGET", K_FACTS, fact_of(n)) == n.id then redis.call("HDEL", K_FACTS, fact_of(n)) end
end

-- Adjacency members of a node, bounded by MAX_DEGREE (two per link at most).
local function adjacency(id)
  return read_call("ZRANGEBYLEX", K_ADJ, "[" .. id .. "\0", "[" .. id .. "\0\255", "LIMIT", 0,
    2 * MAX_DEGREE + 2)
end

local function split_adj(id, member)
  local dir, kind, other = string.match(string.sub(member, #id + 2), "^([<>])%z([^%z]+)%z([^%z]+)$")
  if not dir then corrupt(K_ADJ, "malformed link member of node " .. id) end
  return dir, kind, other
end

-- A node leaves with its links (both directions), index entries, fact and bundle
-- memberships: no dangling edge, no orphan index entry.
local function drop_node(n)
  for _, m in ipairs(adjacency(n.id)) do
    local dir, kind, other = split_adj(n.id, m)
    if dir == ">" then
      redis.call("ZREM", K_ADJ, m, other .. "\0<\0" .. kind .. "\0" .. n.id)
      redis.call("HDEL", K_W, n.id .. "\0" .. kind .. "\0" .. other)
    else
      redis.call("ZREM", K_ADJ, m, other .. "\0>\0" .. kind .. "\0" .. n.id)
      redis.call("HDEL", K_W, other .. "\0" .. kind .. "\0" .. n.id)
    end
  end
  local mine = read_call("ZRANGEBYLEX", K_BUN, "[n\0" .. n.id .. "\0", "[n\0" .. n.id .. "\0\255",
    "LIMIT", 0, MAX_BUNDLES_PER_NODE + 1)
  for _, m in ipairs(mine) do
    local bundle = string.sub(m, #n.id + 4)
    redis.call("ZREM", K_BUN, m, "b\0" .. bundle .. "\0" .. n.id)
  end
  drop_indexes(n)
  redis.call("HDEL", K_NODES, n.id)
  redis.call("HINCRBY", K_GMETA, "n", -1)
end

-- Op records (decision 6): "g1 <digest>" then the reply's fields, packed.
local function dedupe()
  if op_id == "" then return nil end
  local previous = read_call("HGET", K_OPS, op_id)
  if previous then return { "dup", previous, sweep_due(now) } end
  return nil
end

local function finish(reply, rev)
  local parts = { "g1", digest }
  for i = 2, #reply do parts[#parts + 1] = reply[i] end
  record_op(op_id, pack(parts), rev, now, dedupe_ms, ops_listed)
  redis.call("HINCRBY", K_STATS, "graph_" .. action, 1)
  -- A data write's audit record is its event (DESIGN.md decision 2, revised); the audit
  -- stream keeps what the feed does not show: here, declaring the link kinds (admin).
  if action == "config" then
    redis.pcall("XADD", K_AUDIT, "MAXLEN", "~", audit_maxlen, "*", "a", agent, "act", "graph_config",
      "k", "", "op", op_id, "out", "ok", "r", rev)
  end
  reply[#reply + 1] = sweep_due(now)
  return reply
end

local function next_rev() return redis.call("HINCRBY", K_META, "rev", 1) end

local function node_event(etype, n)
  if etype ~= "node_delete" and etype ~= "node_expire" and #n.content <= event_value_max then
    event(etype, n.id, n.ver, n.content, "json")
  else
    event(etype, n.id, n.ver)
  end
end

local function declared_kinds()
  local raw = read_call("HGET", K_GMETA, "kinds")
  if not raw then return nil end
  local set = {}
  for _, k in ipairs(unpack_list(raw, K_GMETA, 1024)) do set[k] = true end
  return set
end

---------------------------------------------------------------------------- writes
if action == "config" then
  local dup = dedupe()
  if dup then return dup end
  local rev = require_graph_kinds() + 1
  local kinds = ARGV[A0 + 1]
  unpack_list(kinds, K_GMETA, 1024)
  next_rev()
  if kinds == "" then redis.call("HDEL", K_GMETA, "kinds") else redis.call("HSET", K_GMETA, "kinds", kinds) end
  redis.call("HSETNX", K_GMETA, "n", 0)
  event("graph_config", "", 0)
  publish_events(stream_maxlen, rev, agent, now)
  return finish({ "ok", rev }, rev)
end

if action == "add" then
  local dup = dedupe()
  if dup then return dup end
  local n = { id = ARGV[A0 + 1], context = ARGV[A0 + 2], kind = ARGV[A0 + 3], conf_text = ARGV[A0 + 4],
    tags_raw = ARGV[A0 + 5], vf = ARGV[A0 + 6], ia = ARGV[A0 + 7], chash = ARGV[A0 + 9],
    content = ARGV[A0 + 10], agent = agent, by = agent, ver = 1 }
  local ttl_ms = opt_int(ARGV[A0 + 8], "ttl_ms")
  n.conf = tonumber(n.conf_text)
  if not n.conf or n.conf ~= n.conf or n.conf < 0 or n.conf > 1 then
    error("swarm_memory: bad confidence " .. tostring(n.conf_text))
  end
  n.tags = unpack_list(n.tags_raw, K_NODES, MAX_TAGS)
  -- The same fact (kind, context, content) is one node: whoever adds it second gets the
  -- first one back. An expired holder of the fact is dropped and replaced.
  local holder = read_call("HGET", K_FACTS, fact_of(n))
  local stale
  if holder then
    local cur, expired = live_node(holder)
    if cur then
      local rev = stored_num(read_call("HGET", K_META, "rev") or "0", K_META, "rev")
      require_graph_kinds()
      return finish({ "ok", 0, rev, cur.id, cur.raw }, rev)
    end
    stale = expired
  end
  if read_call("HEXISTS", K_NODES, n.id) == 1 then
    local cur, expired = live_node(n.id)
    if cur then return { "duplicate", n.id } end
    stale = stale or expired
  end
  local rev = require_graph_kinds() + 1
  next_rev()
  if stale then
    drop_node(stale)
    node_event("node_expire", stale)
  end
  n.x = ttl_ms and (now + ttl_ms) or 0
  n.ct, n.mt, n.cr, n.mr = now, now, rev, rev
  local raw = node_record(n)
  redis.call("HSET", K_NODES, n.id, raw)
  write_indexes(n)
  redis.call("HINCRBY", K_GMETA, "n", 1)
  sync_marker()
  node_event("node_add", n)
  publish_events(stream_maxlen, rev, agent, now)
  return finish({ "ok", 1, rev, n.id, raw }, rev)
end

if action == "update" then
  local dup = dedupe()
  if dup then return dup end
  local id, expected = ARGV[A0 + 1], opt_int(ARGV[A0 + 2], "expected")
  local cur = live_node(id)
  if not cur then return { "missing", id } end
  if expected and cur.ver ~= expected then return { "conflict", cur.raw } end
  local n = {}
  for k, v in pairs(cur) do n[k] = v end
  for i = A0 + 3, #ARGV - 1, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    if name == "context" or name == "kind" or name == "vf" or name == "ia" then
      n[name] = value
    elseif name == "conf" then
      n.conf, n.conf_text = tonumber(value), value
      if not n.conf or n.conf ~= n.conf or n.conf < 0 or n.conf > 1 then
        error("swarm_memory: bad confidence " .. tostring(value))
      end
    elseif name == "tags" then
      n.tags_raw, n.tags = value, unpack_list(value, K_NODES, MAX_TAGS)
    elseif name == "ttl" then
      local ms = int_arg(value, "ttl_ms")
      n.x = ms > 0 and (now + ms) or 0
    elseif name == "content" then
      n.content = value
    elseif name == "chash" then
      n.chash = value
    else
      error("swarm_memory: unknown node field " .. tostring(name))
    end
  end
  if fact_of(n) ~= fact_of(cur) then
    local holder = read_call("HGET", K_FACTS, fact_of(n))
    if holder and holder ~= id and live_node(holder) then return { "duplicate", holder } end
  end
  local rev = require_graph_kinds() + 1
  next_rev()
  drop_indexes(cur)
  n.ver, n.mt, n.mr, n.by = cur.ver + 1, now, rev, agent
  local raw = node_record(n)
  redis.call("HSET", K_NODES, id, raw)
  write_indexes(n)
  sync_marker()
  node_event("node_update", n)
  publish_events(stream_maxlen, rev, agent, now)
  return finish({ "ok", 1, rev, id, raw }, rev)
end

if action == "delete" then
  local dup = dedupe()
  if dup then return dup end
  local id, expected = ARGV[A0 + 1], opt_int(ARGV[A0 + 2], "expected")
  local cur, expired = live_node(id)
  if expected and (not cur or cur.ver ~= expected) then return { "conflict", cur and cur.raw or "" } end
  local gone = cur or expired
  local rev = require_graph_kinds()
  if not gone then return finish({ "ok", 0, rev }, rev) end
  rev = next_rev()
  drop_node(gone)
  sync_marker()
  node_event(cur and "node_delete" or "node_expire", gone)
  publish_events(stream_maxlen, rev, agent, now)
  return finish({ "ok", cur and 1 or 0, rev }, rev)
end

if action == "link" or action == "unlink" then
  local dup = dedupe()
  if dup then return dup end
  local a, b, kind = ARGV[A0 + 1], ARGV[A0 + 2], ARGV[A0 + 3]
  local out_m, in_m, wkey = a .. "\0>\0" .. kind .. "\0" .. b, b .. "\0<\0" .. kind .. "\0" .. a,
    a .. "\0" .. kind .. "\0" .. b
  if action == "unlink" then
    local rev = require_graph_kinds()
    if not read_call("ZSCORE", K_ADJ, out_m) then return finish({ "ok", 0, rev }, rev) end
    rev = next_rev()
    redis.call("ZREM", K_ADJ, out_m, in_m)
    redis.call("HDEL", K_W, wkey)
    event("unlink", a, 0, ARGV[A0 + 5], "json")
    publish_events(stream_maxlen, rev, agent, now)
    return finish({ "ok", 1, rev }, rev)
  end
  local weight = ARGV[A0 + 4]
  local kinds = declared_kinds()
  if kinds and not kinds[kind] then return { "bad_kind", kind } end
  if not live_node(a) then return { "missing", a } end
  if not live_node(b) then return { "missing", b } end
  local existed = read_call("ZSCORE", K_ADJ, out_m) ~= false
  if not existed then
    for _, id in ipairs({ a, b }) do
      local degree = redis.call("ZLEXCOUNT", K_ADJ, "[" .. id .. "\0", "[" .. id .. "\0\255")
      if degree >= 2 * MAX_DEGREE then return { "too_many", "links_per_node", MAX_DEGREE } end
    end
  end
  local rev = require_graph_kinds() + 1
  next_rev()
  redis.call("ZADD", K_ADJ, 0, out_m, 0, in_m)
  redis.call("HSET", K_W, wkey, weight)
  event("link", a, 0, ARGV[A0 + 5], "json")
  publish_events(stream_maxlen, rev, agent, now)
  return finish({ "ok", existed and 0 or 1, rev }, rev)
end

if action == "bundle" then
  local dup = dedupe()
  if dup then return dup end
  local name, op = ARGV[A0 + 1], ARGV[A0 + 2]
  local changed = {}
  for i = A0 + 3, #ARGV do
    local id = ARGV[i]
    local m = "b\0" .. name .. "\0" .. id
    local present = read_call("ZSCORE", K_BUN, m)
    if op == "add" then
      if not live_node(id) then return { "missing", id } end
      if not present then
        local count = redis.call("ZLEXCOUNT", K_BUN, "[n\0" .. id .. "\0", "[n\0" .. id .. "\0\255")
        if count >= MAX_BUNDLES_PER_NODE then return { "too_many", "bundles_per_node", MAX_BUNDLES_PER_NODE } end
        changed[#changed + 1] = id
      end
    elseif present then
      changed[#changed + 1] = id
    end
  end
  local rev = require_graph_kinds()
  if #changed == 0 then return finish({ "ok", 0, rev }, rev) end
  rev = next_rev()
  for _, id in ipairs(changed) do
    if op == "add" then
      redis.call("ZADD", K_BUN, 0, "b\0" .. name .. "\0" .. id, 0, "n\0" .. id .. "\0" .. name)
    else
      redis.call("ZREM", K_BUN, "b\0" .. name .. "\0" .. id, "n\0" .. id .. "\0" .. name)
    end
  end
  event("bundle_" .. op, name, #changed)
  publish_events(stream_maxlen, rev, agent, now)
  return finish({ "ok", #changed, rev }, rev)
end

if action == "sweep" then
  local batch = int_arg(ARGV[A0 + 1], "batch")
  local due = read_call("ZRANGEBYSCORE", K_GEXP, "-inf", now, "LIMIT", 0, batch)
  local found = {}
  for _, id in ipairs(due) do
    local raw = read_call("HGET", K_NODES, id)
    if raw then found[#found + 1] = parse_node(id, raw) end
  end
  local rev = require_graph_kinds()
  if #found > 0 then
    rev = next_rev()
    for _, n in ipairs(found) do
      drop_node(n)
      node_event("node_expire", n)
    end
    publish_events(stream_maxlen, rev, agent, now)
    redis.call("HINCRBY", K_STATS, "expired", #found)
  end
  for _, id in ipairs(due) do redis.call("ZREM", K_GEXP, id) end -- index entries without a node too
  sync_marker()
  local more = #read_call("ZRANGEBYSCORE", K_GEXP, "-inf", now, "LIMIT", 0, 1)
  return { "ok", #found, more }
end

---------------------------------------------------------------------------- reads
local reply = { "ok", sweep_due(now), now }

if action == "get" then
  for i = A0 + 1, #ARGV do
    local n = live_node(ARGV[i])
    reply[#reply + 1] = n and n.raw or ""
  end
  return reply
end

if action == "stats" then
  reply[#reply + 1] = stored_int(read_call("HGET", K_GMETA, "n") or "0") or 0
  reply[#reply + 1] = math.floor(read_call("ZCARD", K_ADJ) / 2)
  reply[#reply + 1] = math.floor(read_call("ZCARD", K_BUN) / 2)
  reply[#reply + 1] = read_call("ZCARD", K_GEXP)
  local kinds = read_call("HGET", K_GMETA, "kinds")
  if kinds then unpack_list(kinds, K_GMETA, 1024) end
  reply[#reply + 1] = read_call("HEXISTS", K_GMETA, "n") -- 1 once configured or written
  reply[#reply + 1] = kinds or ""
  return reply
end

-- Byte order of two strings (Lua's < follows the server's collation locale).
local function bytes_lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

if action == "recall" then
  -- args: agent context kind tags_packed since until min_conf limit cursor budget valid_at
  local f_agent, f_context, f_kind = ARGV[A0 + 1], ARGV[A0 + 2], ARGV[A0 + 3]
  local f_tags = unpack_list(ARGV[A0 + 4], K_GIX, MAX_TAGS)
  local since, until_ = opt_int(ARGV[A0 + 5], "since"), opt_int(ARGV[A0 + 6], "until")
  local min_conf = ARGV[A0 + 7] ~= "" and tonumber(ARGV[A0 + 7]) or nil
  local limit, cursor, budget = int_arg(ARGV[A0 + 8], "limit"), ARGV[A0 + 9], int_arg(ARGV[A0 + 10], "budget")
  local valid_at = opt_int(ARGV[A0 + 11], "valid_at")

  -- Candidate ranges: one per given filter, each ordered by (created, id) and cut to
  -- [since, until] and below the cursor. ZLEXCOUNT is O(log N): the narrowest is scanned.
  local prefixes = { "t\0" }
  if f_agent ~= "" then prefixes[#prefixes + 1] = "a\0" .. f_agent .. "\0" end
  if f_context ~= "" then prefixes[#prefixes + 1] = "c\0" .. f_context .. "\0" end
  if f_kind ~= "" then prefixes[#prefixes + 1] = "k\0" .. f_kind .. "\0" end
  for _, tag in ipairs(f_tags) do prefixes[#prefixes + 1] = "g\0" .. tag .. "\0" end
  local best, best_n, lo, hi
  for _, p in ipairs(prefixes) do
    local l = "[" .. p .. pad(since or 0)
    local h
    if cursor ~= "" then h = "(" .. p .. cursor
    elseif until_ then h = "(" .. p .. pad(until_ + 1)
    else h = "[" .. p .. "\255" end
    local count = read_call("ZLEXCOUNT", K_GIX, l, h)
    if not best_n or count < best_n then best, best_n, lo, hi = p, count, l, h end
  end
  local conf_n = min_conf and read_call("ZCOUNT", K_CONF, ARGV[A0 + 7], "+inf")

  local tag_set = {}
  for _, tag in ipairs(f_tags) do tag_set[tag] = true end
  local function matches(n)
    if n.x > 0 and n.x <= now then return false end
    if f_agent ~= "" and n.agent ~= f_agent then return false end
    if f_context ~= "" and n.context ~= f_context then return false end
    if f_kind ~= "" and n.kind ~= f_kind then return false end
    if since and n.ct < since then return false end
    if until_ and n.ct > until_ then return false end
    if min_conf and n.conf < min_conf then return false end
    if valid_at then -- valid_from <= valid_at < invalid_at, either end open when unset
      if n.vf ~= "" and (stored_int(n.vf) or corrupt(K_NODES, "bad valid_from")) > valid_at then return false end
      if n.ia ~= "" and (stored_int(n.ia) or corrupt(K_NODES, "bad invalid_at")) <= valid_at then return false end
    end
    local have, need = 0, #f_tags
    if need > 0 then
      for _, t in ipairs(n.tags) do if tag_set[t] then have = have + 1 end end
      if have < need then return false end
    end
    return true
  end

  local found, next_cursor = {}, ""
  if conf_n and conf_n < best_n and conf_n <= budget then
    -- The confidence index is the narrowest and small: take it whole, order by time.
    local ids = read_call("ZRANGEBYSCORE", K_CONF, ARGV[A0 + 7], "+inf")
    local hits = {}
    for _, id in ipairs(ids) do
      local raw = read_call("HGET", K_NODES, id)
      if not raw then corrupt(K_CONF, "names missing node " .. id) end
      local n = parse_node(id, raw)
      local key = pad(n.ct) .. "\0" .. id
      if matches(n) and (cursor == "" or bytes_lt(key, cursor)) then
        n.key = key
        hits[#hits + 1] = n
      end
    end
    table.sort(hits, function(x, y) return bytes_lt(y.key, x.key) end)
    for i = 1, math.min(limit, #hits) do found[#found + 1] = hits[i] end
    if #hits > limit then next_cursor = found[#found].key end
    reply[#reply + 1] = "conf"
  else
    -- A candidate of the scanned index must be in every other index the filters name:
    -- its members there are known from its key (one ZSCORE each, O(log N)), so most
    -- misses are skipped without reading and parsing the node's record.
    local others = {}
    for _, p in ipairs(prefixes) do
      if p ~= best and p ~= "t\0" then others[#others + 1] = p end
    end
    local function indexed(key, id)
      for _, p in ipairs(others) do
        if not redis.call("ZSCORE", K_GIX, p .. key) then return false end
      end
      if min_conf then
        local c = tonumber(redis.call("ZSCORE", K_CONF, id))
        if not c or c < min_conf then return false end
      end
      return true
    end
    local scanned, exhausted = 0, false
    local upper = hi
    while #found < limit and scanned < budget do
      local chunk = math.min(budget - scanned, math.max(limit - #found, 16), 256)
      local members = read_call("ZREVRANGEBYLEX", K_GIX, upper, lo, "LIMIT", 0, chunk)
      for _, m in ipairs(members) do
        scanned = scanned + 1
        local key = string.sub(m, #best + 1)
        local id = string.sub(key, 17)
        next_cursor = key
        if indexed(key, id) then
          local raw = read_call("HGET", K_NODES, id)
          if not raw then corrupt(K_GIX, "names missing node " .. id) end
          local n = parse_node(id, raw)
          if matches(n) then
            found[#found + 1] = n
            if #found >= limit then break end
          end
        end
      end
      if #members < chunk then exhausted = true break end
      upper = "(" .. best .. next_cursor
    end
    if exhausted and #found < limit then next_cursor = "" end
    reply[#reply + 1] = string.sub(best, 1, 1)
  end
  reply[#reply + 1] = next_cursor
  for _, n in ipairs(found) do
    reply[#reply + 1] = n.id
    reply[#reply + 1] = n.raw
  end
  return reply
end

if action == "neighbors" then
  -- args: id kind direction(out|in|both) depth limit budget
  local start, kind, direction = ARGV[A0 + 1], ARGV[A0 + 2], ARGV[A0 + 3]
  local depth, limit, budget = int_arg(ARGV[A0 + 4], "depth"), int_arg(ARGV[A0 + 5], "limit"),
    int_arg(ARGV[A0 + 6], "budget")
  if not live_node(start) then return { "missing", start } end
  local seen, frontier, scanned, n_found = { [start] = true }, { start }, 0, 0
  local truncated = 0
  local dirs = {}
  if direction ~= "in" then dirs[#dirs + 1] = ">" end
  if direction ~= "out" then dirs[#dirs + 1] = "<" end
  for d = 1, depth do
    local next_frontier = {}
    for _, id in ipairs(frontier) do
      for _, dir in ipairs(dirs) do
        local p = id .. "\0" .. dir .. "\0"
        if kind ~= "" then p = p .. kind .. "\0" end
        local members = read_call("ZRANGEBYLEX", K_ADJ, "[" .. p, "[" .. p .. "\255", "LIMIT", 0,
          budget - scanned + 1)
        for _, m in ipairs(members) do
          if scanned >= budget or n_found >= limit then truncated = 1 break end
          scanned = scanned + 1
          local _, k, other = split_adj(id, m)
          if not seen[other] then
            local n = live_node(other)
            if n then
              seen[other] = true
              local wkey = dir == ">" and (id .. "\0" .. k .. "\0" .. other) or (other .. "\0" .. k .. "\0" .. id)
              local weight = read_call("HGET", K_W, wkey) or ""
              for _, x in ipairs({ other, d, dir, k, weight, id, n.raw }) do reply[#reply + 1] = x end
              n_found = n_found + 1
              next_frontier[#next_frontier + 1] = other
            end
          end
        end
      end
    end
    frontier = next_frontier
  end
  table.insert(reply, 4, truncated)
  return reply
end

if action == "bundle_list" then
  -- args: name after limit
  local name, after, limit = ARGV[A0 + 1], ARGV[A0 + 2], int_arg(ARGV[A0 + 3], "limit")
  local p = "b\0" .. name .. "\0"
  local lo = after ~= "" and ("(" .. p .. after) or ("[" .. p)
  local members = read_call("ZRANGEBYLEX", K_BUN, lo, "[" .. p .. "\255", "LIMIT", 0, limit)
  reply[#reply + 1] = #members == limit and string.sub(members[#members], #p + 1) or ""
  for _, m in ipairs(members) do
    local id = string.sub(m, #p + 1)
    local n = live_node(id)
    if n then
      reply[#reply + 1] = id
      reply[#reply + 1] = n.raw
    end
  end
  return reply
end

error("swarm_memory: unknown graph action " .. tostring(action))
