--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell +items(entry hist)
--! args: agent audit_maxlen stream_maxlen mode batch +items(key)
--! returns: {"ok", removed, next_names...} | {"dropped", removed} | {"nons"} | {"denied", granted}
--
-- Removes entries in batches for clear_namespace ("clear", namespace live) and
-- delete_namespace ("delete", namespace already marked "deleting"). Key names cannot be
-- built in Lua, so each call returns the next batch of names for the caller to pass back.
-- "clear" walks forward (lexicographically) past the last name it removed, so writers
-- adding keys meanwhile cannot make it run forever. When "delete" finds the index
-- empty it removes every remaining key of the namespace.
local agent, audit_maxlen, stream_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen"), int_arg(ARGV[3], "stream_maxlen")
local mode, batch = ARGV[4], int_arg(ARGV[5], "batch")
local state = read_call("HGET", K_META, "state")
if (mode == "clear" and state ~= "live") or (mode == "delete" and state ~= "deleting") then
  return { "nons" }
end
audit_maxlen = stored_limit(read_call("HGET", K_META, "am"), audit_maxlen) -- the namespace's retention
local denied = deny_reply(agent, redis.call("HGET", K_META, "dp"), LEVEL_RANK.admin, "ns_" .. mode, nil, audit_maxlen)
if denied then return denied end
local now = now_ms()

-- Everything is read, and every key written below checked, before the first write.
local listed = {}
for j = 1, (#KEYS - N_FIXED) / 2 do
  local name, ekey = ARGV[5 + j], KEYS[N_FIXED + 2 * j - 1]
  if read_call("ZSCORE", K_IDX, name) then
    listed[j] = { stored_version(ekey), redis.call("HSTRLEN", ekey, "v") }
  end
end
require_kinds({ K_LRU, "zset", K_EXP, "zset", K_EPH, "zset", K_STATS, "hash" })
require_stream_room(K_AUDIT)
require_counters(K_STATS, "delete")
require_counters(K_META, "n", "b") -- drop_entry adjusts them
require_next_revision_room()

local removed, rev, last = 0, nil, nil
for j = 1, (#KEYS - N_FIXED) / 2 do
  local name = ARGV[5 + j]
  local ekey, hkey = KEYS[N_FIXED + 2 * j - 1], KEYS[N_FIXED + 2 * j]
  last = name
  if listed[j] then
    if not rev then rev = redis.call("HINCRBY", K_META, "rev", 1) end
    local ver = listed[j][1]
    drop_entry(name, ekey, hkey, listed[j][2])
    -- "c": the audit stream has this revision (ns_clear / ns_delete), not the feed's view.
    event("delete", name, ver, nil, nil, removed == 0 and ("ns_" .. mode) or nil)
    removed = removed + 1
  end
end
if removed > 0 then
  publish_events(stream_maxlen, rev, agent, now)
  redis.call("HINCRBY", K_STATS, "delete", removed)
  audit(audit_maxlen, agent, "ns_" .. mode, "", "", "ok", rev)
end

local from = "-"
if last and mode == "clear" then from = "(" .. last end
local next_names = redis.call("ZRANGEBYLEX", K_IDX, from, "+", "LIMIT", 0, batch)
if mode == "delete" and #next_names == 0 then
  redis.call("DEL", K_META, K_ACL, K_STATS, K_IDX, K_LRU, K_EXP, K_EVENTS, K_AUDIT, K_OPS, K_OPST,
    K_LEASE, K_EPH, K_LOCKS, K_LOCKH)
  redis.call("SPUBLISH", K_BELL, 0) -- wake watchers: their next read finds no namespace
  return { "dropped", removed }
end
if mode == "clear" and #next_names == 0 then
  rev = redis.call("HINCRBY", K_META, "rev", 1)
  event("ns_clear")
  publish_events(stream_maxlen, rev, agent, now)
end
local reply = { "ok", removed }
for _, name in ipairs(next_names) do reply[#reply + 1] = name end
return reply
