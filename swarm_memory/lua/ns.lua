--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell
--! args: agent audit_maxlen stream_maxlen action +args
--! returns: {"ok", ...} | {"nons"} | {"exists"} | {"deleting"} | {"denied", granted} | {"last_admin"}
--
-- Namespace lifecycle and permissions. All checks happen here, server-side:
--   create  exist_ok, then config pairs, "--", then agent/level pairs
--   info                                -> {"ok", meta pairs, acl pairs, stats pairs}
--   update  config pairs                (admin)
--   grant   agent/level pairs           (admin)
--   revoke  agent names                 (admin)
--   delete                              (admin) marks the namespace "deleting"; purge.lua
--                                       then removes entries and finally every key.
-- Removing the last admin is refused: a namespace must stay administrable.
local agent, audit_maxlen, stream_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen"), int_arg(ARGV[3], "stream_maxlen")
local action = ARGV[4]
local CONFIG_FIELDS = { dp = true, strat = true, ttl = true, mk = true, mb = true, hd = true, oq = true, em = true, rl = true,
  am = true, dw = true }
local now = now_ms()
-- Every script reads and writes fields of K_META, ~20 of them: in a listpack (Redis's
-- encoding of a small hash) each field read or written scans the list, in a hash table
-- it is one lookup (a put's 12-field HMGET 34.6k -> 22.6k instructions, its 3-field
-- HSET 11.8k -> 6.0k: bench/server_cost.py, docs/performance.md). A value longer than
-- hash-max-listpack-value (64 by default) turns the hash into a hash table for as long
-- as it exists; this field is that value, and says so. (A server configured with a
-- larger limit keeps the listpack: slower, the same results.)
local META_ENCODING = "hashtable: a value longer than hash-max-listpack-value keeps this hash out of listpack"

-- The configuration a write reads, packed into "cfg" (namespace_cfg in _lib.lua) from the
-- fields just stored. Their values come from the client's checked options: none holds a
-- ",". (A hand-edited field reaches writes with the next update.)
local function store_cfg()
  local v = redis.call("HMGET", K_META, unpack(CFG_FIELDS))
  for i = 1, #CFG_FIELDS do v[i] = v[i] or "" end
  redis.call("HSET", K_META, "cfg", table.concat(v, ",", 1, #CFG_FIELDS))
end

-- The ACL hash's marker (ACL_MARK in _lib.lua): the default level while the namespace is
-- live, written after every change of the namespace's configuration or permissions.
-- dp: the namespace's stored default level (nil: none stored, and no marker).
local function mark_acl(dp)
  if dp then redis.call("HSET", K_ACL, ACL_MARK, dp) else redis.call("HDEL", K_ACL, ACL_MARK) end
end

-- An agent name the client would have refused (keys.py): never one that starts with the
-- marker's "#", which no grant or revoke may touch.
local function check_agent_name(name)
  if string.sub(name, 1, 1) == ACL_MARK then error("swarm_memory: bad agent name " .. name) end
end

if action == "create" then
  local state = read_call("HGET", K_META, "state")
  if state == "live" then return { "exists" } end
  if state then return { "deleting" } end
  require_kinds({ K_ACL, "hash" })
  require_stream_room(K_AUDIT)
  require_feed_room(1)
  local i, fields = 6, {}
  while ARGV[i] ~= "--" do
    if not CONFIG_FIELDS[ARGV[i]] then error("swarm_memory: unknown namespace field " .. ARGV[i]) end
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
    i = i + 2
  end
  -- lt: the fencing-token counter. It starts from the clock in microseconds so that tokens
  -- of a deleted and re-created namespace never repeat those handed out before: each token
  -- took a script run of more than a microsecond, so the old incarnation issued fewer
  -- tokens than microseconds passed since it was created. (Milliseconds x 1000 repeated
  -- the first token when both creations fell in the same millisecond.)
  redis.call("HSET", K_META, "state", "live", "rev", 1, "n", 0, "b", 0, "ct", now, "cb", agent,
    "lt", itos(now_us()), "enc", META_ENCODING, unpack(fields))
  store_cfg()
  i = i + 1
  while i <= #ARGV do
    if not LEVEL_RANK[ARGV[i + 1]] then error("swarm_memory: unknown level " .. ARGV[i + 1]) end
    check_agent_name(ARGV[i])
    redis.call("HSET", K_ACL, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call("HSET", K_ACL, agent, "admin") -- the creator administers what it created
  mark_acl(redis.call("HGET", K_META, "dp")) -- as stored from the create's fields
  event("ns_create")
  publish_events(stream_maxlen, 1, agent, now)
  audit(audit_maxlen, agent, "ns_create", "", "", "ok", 1)
  return { "ok", 1 }
end

local meta = load_meta()
if meta then audit_maxlen = stored_limit(meta[3], audit_maxlen) end -- the namespace's retention
if not meta then return { "nons" } end

if action == "info" then
  local denied = deny_reply(agent, meta[2], LEVEL_RANK.read, "ns_info", nil, audit_maxlen)
  if denied then return denied end
  local acl, shown = redis.call("HGETALL", K_ACL), {}
  for j = 1, #acl, 2 do
    if acl[j] ~= ACL_MARK then shown[#shown + 1], shown[#shown + 2] = acl[j], acl[j + 1] end
  end
  return { "ok", redis.call("HGETALL", K_META), shown, redis.call("HGETALL", K_STATS) }
end

local denied = deny_reply(agent, meta[2], LEVEL_RANK.admin, "ns_" .. action, nil, audit_maxlen)
if denied then return denied end
-- Every action below writes these (K_META and K_ACL were read by now).
require_stream_room(K_AUDIT)
require_next_revision_room()

-- Would the namespace still have an admin after `changes` (agent -> level or false)?
local function keeps_an_admin(changes, default_level)
  if default_level == "admin" then return true end
  local acl = redis.call("HGETALL", K_ACL)
  for j = 1, #acl, 2 do
    local lv = acl[j + 1]
    if changes[acl[j]] ~= nil then lv = changes[acl[j]] end
    if lv == "admin" and acl[j] ~= ACL_MARK then return true end -- (the marker is no agent)
  end
  for name, lv in pairs(changes) do
    if lv == "admin" then return true end
  end
  return false
end

local etype
if action == "update" then
  local fields, default_level = {}, meta[2]
  for i = 5, #ARGV, 2 do
    if not CONFIG_FIELDS[ARGV[i]] then error("swarm_memory: unknown namespace field " .. ARGV[i]) end
    if ARGV[i] == "dp" then default_level = ARGV[i + 1] end
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
  if not keeps_an_admin({}, default_level) then return { "last_admin" } end
  -- The eviction-order index is kept only under evict-oldest (write.lua). Leaving that
  -- policy drops it; taking it up starts it afresh, and when there are entries to order
  -- marks it unfinished ("lx": a token naming this switch) until lru.lua has added every
  -- entry by the revision of its last write. A switch back and forth while a rebuild runs
  -- changes the token, so the older rebuild starts over instead of finishing the new one.
  local oq_was, oq_now = read_call("HGET", K_META, "oq"), nil
  for i = 1, #fields, 2 do
    if fields[i] == "oq" then oq_now = fields[i + 1] end
  end
  if oq_now == "evict-oldest" and oq_was ~= "evict-oldest" then
    local has_entries = read_call("ZCARD", K_IDX) > 0
    redis.call("DEL", K_LRU)
    if has_entries then fields[#fields + 1], fields[#fields + 2] = "lx", itos(now_us()) end
  elseif (oq_now or oq_was) ~= "evict-oldest" then
    -- Not (or no longer) evict-oldest: no index. This also drops the one that namespaces
    -- stored before the index was kept only under evict-oldest still hold.
    redis.call("DEL", K_LRU)
    redis.call("HDEL", K_META, "lx")
  end
  -- Namespaces created before META_ENCODING get it with their next update.
  redis.call("HSET", K_META, "enc", META_ENCODING, unpack(fields))
  store_cfg() -- also a namespace created before "cfg" existed gets it now
  mark_acl(default_level) -- and one created before the ACL marker, the marker
  etype = "ns_update"
elseif action == "grant" then
  local changes = {}
  for i = 5, #ARGV, 2 do
    if not LEVEL_RANK[ARGV[i + 1]] then error("swarm_memory: unknown level " .. ARGV[i + 1]) end
    check_agent_name(ARGV[i])
    changes[ARGV[i]] = ARGV[i + 1]
  end
  if not keeps_an_admin(changes, meta[2]) then return { "last_admin" } end
  for name, lv in pairs(changes) do redis.call("HSET", K_ACL, name, lv) end
  mark_acl(meta[2])
  etype = "ns_grant"
elseif action == "revoke" then
  local changes = {}
  for i = 5, #ARGV do
    check_agent_name(ARGV[i])
    changes[ARGV[i]] = false
  end
  if not keeps_an_admin(changes, meta[2]) then return { "last_admin" } end
  local removed = 0
  for i = 5, #ARGV do removed = removed + redis.call("HDEL", K_ACL, ARGV[i]) end
  if removed == 0 then return { "ok", tonumber(redis.call("HGET", K_META, "rev")) } end
  mark_acl(meta[2])
  etype = "ns_revoke"
elseif action == "delete" then
  redis.call("HSET", K_META, "state", "deleting")
  redis.call("HDEL", K_ACL, ACL_MARK) -- reads go by the state now: "deleting" is not live
  etype = "ns_delete"
else
  error("swarm_memory: unknown namespace action " .. tostring(action))
end
local rev = redis.call("HINCRBY", K_META, "rev", 1)
event(etype)
publish_events(stream_maxlen, rev, agent, now)
audit(audit_maxlen, agent, etype, "", "", "ok", rev)
return { "ok", rev }
