--! keys: meta acl stats idx exp events audit ops opst bell lease +items(entry hist)
--! args: agent op_id limits head key value digest
--! returns: {"ok", rev, sweep_due, 1, "w", ver, cr, mr, ct, mt, x, size, "", "", 0} | {"dup", record, sweep_due} | {"general", "namespace"|"entry"} | {"nons"} | {"denied", granted} | {"conflict", 1, entry...} | {"version_required", 1, strategy} | {"quota", kind, limit, current, requested} | {"too_large", 1, size}
--
-- One put of one key (`put()` without a fence, not ephemeral), apart from write.lua
-- (stop 28), as get.lua is apart from read.lua: the write script's work for its one "P"
-- item, without the machinery of batches, fences, victims, transactions and computed
-- values (the plan, kinds, records and reply tables; the item loops), and with 11 fixed
-- names and 7 arguments instead of 14 and 11 (docs/performance.md, "A put's own
-- script, stop 28"). Everything a put promises is kept as write.lua keeps it, with its
-- helpers: the identity and permission checks, the dedupe record (found before anything
-- else is decided, so a replay of a call that write.lua applied is answered here too),
-- the strategy and expected-version checks, the quota, the value and its metadata, the
-- version and the namespace revision, the key index, the expiry, history, the event,
-- the stats counter and the op record, in the same texts and with the same reply; a key
-- it writes is checked before the first write (require_kinds, commit_write).
--
-- What only write.lua does, this answers {"general", why} before it writes anything, and
-- the client sends the same call there: "namespace" for a namespace with the merge
-- strategy, a lock requirement or the evict-oldest order (the client then sends its
-- puts there straight away, for a while: _ops/entries.py, GENERAL_PUTS), "entry" for an
-- entry that expired (its drop and "expire" event), one tied to a lease, or one stored
-- field by field before "m" (one round trip more, for that put).
-- head: "<op> <expected> <ttl_ms> <fmt>" as write.lua's item head, op "P".
local agent, op_id = ARGV[1], ARGV[2]
local limits = int_fields(ARGV[3], 5, "limits")
local dedupe_ms, stream_maxlen, audit_maxlen, max_value_bytes = limits[1], limits[2], limits[3], limits[4]
local event_value_max = limits[5]
local op, expected, ttl_ms, fmt = item_head(ARGV[4])
local name, value, digest = ARGV[5], ARGV[6], ARGV[7]
if #KEYS ~= N_FIXED + 2 or #ARGV ~= 7 or op ~= "P" then
  error("swarm_memory: put called with mismatched KEYS/ARGV")
end
local ekey, hkey = KEYS[N_FIXED + 1], KEYS[N_FIXED + 2]

-- As write.lua: one read of the namespace hash, the permission, the clock, the replay.
local meta = redis.pcall("HMGET", K_META, "state", "cfg", "n", "b", "rev")
if meta.err then corrupt(K_META, "holds the wrong type for HMGET") end
if meta[1] ~= "live" then return { "nons" } end
local cfg = namespace_cfg(meta[2])
local denied = deny_reply(agent, cfg.dp, LEVEL_RANK.write, "put", name, nil, audit_maxlen)
if denied then return denied end
local now = now_ms()
local previous = redis.pcall("HGET", K_OPS, op_id)
if previous then
  if type(previous) == "table" then corrupt(K_OPS, "holds the wrong type for HGET") end
  return { "dup", previous, sweep_due(now) }
end
local n_keys, n_bytes = stored_num(meta[3], K_META, "n"), stored_num(meta[4], K_META, "b")
local meta_rev = stored_num(meta[5] or "0", K_META, "rev")

local strategy = cfg.strat
if strategy == "merge" or cfg.rl or cfg.oq == "evict-oldest" then return { "general", "namespace" } end
local cur, expired = read_entry(ekey, now)
if expired or (cur and (cur.eo or cur.legacy)) then return { "general", "entry" } end

-- write.lua's phase 1 for a "P" item.
if expected ~= nil then
  if (expected == 0 and cur) or (expected > 0 and (not cur or cur.ver ~= expected)) then
    return conflict_reply(1, cur)
  end
elseif strategy == "version" or strategy == "custom" then
  return { "version_required", 1, strategy }
elseif strategy == "first-wins" and cur then
  return conflict_reply(1, cur)
end
local size = #value
if size > max_value_bytes then return { "too_large", 1, size } end
local x = 0
if ttl_ms then x = now + ttl_ms elseif cfg.ttl > 0 then x = now + cfg.ttl end
local key_delta, byte_delta = 1, size
if cur then key_delta, byte_delta = 0, size - #cur.v end
local max_keys, max_bytes = cfg.mk, cfg.mb
if (max_keys > 0 and key_delta > 0) or (max_bytes > 0 and byte_delta > 0) then
  local kind, limit, current, requested = quota_over(n_keys + key_delta, n_bytes + byte_delta,
    max_keys, max_bytes, n_keys, n_bytes, key_delta, byte_delta)
  if kind then return { "quota", kind, limit, current, requested } end
end

-- Phase 2. The keys written below that nothing above read: the history hash (a replaced
-- version, where the namespace keeps history) or the key index (a new key).
local history = cur and cfg.hd > 0
if history then require_kinds({ hkey, "hash" }) elseif not cur then require_kinds({ K_IDX, "zset" }) end
-- (read before the writes, as write.lua reads it)
local due = redis.call("EXISTS", K_EXP, K_LEASE) ~= 0 and sweep_due_read(now) or 0
local rev = meta_rev + 1
local rev_s, now_s = itos(rev), itos(now)
local ver, cr, ct = 1, rev_s, now_s -- (cr and ct as text, like the entry's: see unpack_entry)
if cur then ver, cr, ct = cur.ver + 1, cur.cr, cur.ct end
if size <= event_value_max then event("put", name, ver, value, fmt) else event("put", name, ver) end
commit_write(op_id, now_s, "put", stream_maxlen, rev, agent, now, cfg.em, dedupe_ms)
if history then
  keep_history(hkey, cur, cfg.hd)
elseif not cur then
  redis.call("ZADD", K_IDX, 0, name)
end
redis.call("HSET", ekey, "v", value, "m", entry_meta(ver, cr, rev_s, ct, now_s, x, agent, fmt))
if x > 0 then redis.call("ZADD", K_EXP, x, name) elseif cur and cur.x > 0 then redis.call("ZREM", K_EXP, name) end
if key_delta ~= 0 or byte_delta ~= 0 then
  redis.call("HSET", K_META, "rev", rev_s, "n", itos(n_keys + key_delta), "b", itos(n_bytes + byte_delta))
else -- (a value replaced by one of the same size: the counts are as stored)
  redis.call("HSET", K_META, "rev", rev_s)
end
-- The op record, write.lua's text for one written item and no values: "w1 <digest|->
-- <rev> <now> 1 0 0|w <ver> <cr> <ct> <x> <size>|" (swarm_memory._ops.parse_op_record).
redis.call("HSET", K_OPS, op_id, "w1 " .. (digest == "" and "-" or digest) .. " " .. rev_s .. " " .. now_s
  .. " 1 0 0|w " .. itos(ver) .. " " .. cr .. " " .. ct .. " " .. itos(x) .. " " .. itos(size) .. "|")
return { "ok", rev, due, 1, "w", ver, cr, rev_s, ct, now_s, x, size, "", "", 0 }
