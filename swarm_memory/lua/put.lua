--! keys: meta acl stats idx exp events audit ops opst bell lease +items(entry hist)
--! args: agent op_id limits head key value digest
--! returns: {"ok", rev, sweep_due, 1, "w", ver, cr, mr, ct, mt, x, size, value, fmt, 0} | {"dup", record, sweep_due} | {"general", "namespace"|"entry"} | {"nons"} | {"denied", granted} | {"conflict", 1, entry...} | {"version_required", 1, strategy} | {"quota", kind, limit, current, requested} | {"not_integer", 1} | {"too_large", 1, size} | {"merge_fallback", 1, "patch"|"stored"}
--
-- Its "ok" goes packed (a computed value of at most PACKED_VALUE_MAX bytes),
-- "ok <rev> <due> w <ver> <cr> <mr> <ct> <mt> <x> <size> <fmt> <value>"
-- (one string, the value last: it may hold spaces; _ops/replies.py unpack_put reads it as
-- the array above): Redis converts a table of 15 at ~9k instructions, this string at ~0.4k
-- (docs/performance.md, "Packed replies, stop 34").
--
-- One put of one key (`put()` without a fence, not ephemeral), apart from write.lua
-- (stop 28), as get.lua is apart from read.lua, and since stop 29 one `incr()` or
-- `create()` of one key likewise: the write script's work for its one "P", "I" or "S"
-- item, without the machinery of batches, fences, victims, transactions and computed
-- values other than an incr's (the plan, kinds, records and reply tables; the item
-- loops), and with 11 fixed names and 7 arguments instead of 14 and 11
-- (docs/performance.md, "A put's own script, stop 28"). Everything these calls promise
-- is kept as write.lua keeps it, with its helpers: the identity and permission checks,
-- the dedupe record (found before anything else is decided, so a replay of a call that
-- write.lua applied is answered here too),
-- the strategy and expected-version checks, the quota, the value and its metadata, the
-- version and the namespace revision, the key index, the expiry, history, the event,
-- the stats counter and the op record, in the same texts and with the same reply; a key
-- it writes is checked before the first write (require_kinds, commit_write).
--
-- Since stop 32 a put in a namespace with the merge strategy is merged here too, as
-- write.lua merges it (merge_patch on the stored JSON text; "merge_fallback" where only
-- the client can merge), its merged value in the reply and the op record as an incr's
-- new value is (docs/performance.md, "Merges on put.lua, and what a merge remembers,
-- stop 32").
-- What only write.lua does, this answers {"general", why} before it writes anything, and
-- the client sends the same call there: "namespace" for a namespace with a lock
-- requirement or the evict-oldest order (the client then sends its puts there straight
-- away, for a while: _ops/entries.py, GENERAL_PUTS), "entry" for an
-- entry that expired (its drop and "expire" event), one tied to a lease, or one stored
-- field by field before "m" (one round trip more, for that put).
-- head: "<op> <expected> <ttl_ms> <fmt>" as write.lua's item head. The op names the call
-- (its action: the stats counter, the event's call tag, a denial's audit record): "P" a
-- put (merged into the stored value in a merge namespace); "S" a create (the whole
-- value, never merged, expected version 0: the only "S" a call of one item without echo
-- sends, _ops/entries.py); "I" an incr (value: the amount; the reply has the counter's
-- new value and "json", as write.lua's has).
local agent, op_id = ARGV[1], ARGV[2]
local limits = int_fields(ARGV[3], 5, "limits")
local dedupe_ms, stream_maxlen, audit_maxlen, max_value_bytes = limits[1], limits[2], limits[3], limits[4]
local event_value_max = limits[5]
local op, expected, ttl_ms, fmt = item_head(ARGV[4])
local name, value, digest = ARGV[5], ARGV[6], ARGV[7]
if #KEYS ~= N_FIXED + 2 or #ARGV ~= 7 then
  error("swarm_memory: put called with mismatched KEYS/ARGV")
end
local action = op == "P" and "put" or op == "I" and "incr" or op == "S" and "create" or nil
if not action then error("swarm_memory: put takes a P, I or S item, not " .. op) end
local ekey, hkey = KEYS[N_FIXED + 1], KEYS[N_FIXED + 2]

-- As write.lua: the namespace state, the permission, the clock, the replay (write_gate).
local stop, cfg, now, n_keys, n_bytes, meta_rev = write_gate(agent, op_id, action, name, audit_maxlen)
if stop then return stop end

local strategy = cfg.strat
if cfg.rl or cfg.oq == "evict-oldest" then return { "general", "namespace" } end
local cur, expired = read_entry(ekey, now)
if expired or (cur and (cur.eo or cur.legacy)) then return { "general", "entry" } end

-- write.lua's phase 1 for a "P", "S" or "I" item.
local refused = compare_refused(1, op, expected, cur, strategy)
if refused then return refused end
-- computed: the value stored is not the one sent (an incr's sum, a merge's result), so
-- the reply and the op record carry it, as write.lua's do.
local computed = false
if op == "I" then
  value, fmt, computed = incremented(cur, value), "json", true
  if not value then return { "not_integer", 1 } end
elseif op == "P" and strategy == "merge" then
  local merged, why = merged_value(ekey, cur, fmt, value) -- (write.lua's merge)
  if not merged then return { "merge_fallback", 1, why } end
  value, computed = merged, true
end
local size = #value
if size > max_value_bytes then return { "too_large", 1, size } end
local x = 0
-- (a counter keeps its expiry, like Redis INCR; a put takes the namespace's default)
if ttl_ms then x = now + ttl_ms elseif op == "I" and cur then x = cur.x elseif cfg.ttl > 0 then x = now + cfg.ttl end
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
-- Every number this sends is formatted here once: the event, the entry's metadata, the
-- op record and the reply take the same texts (a call of itos costs ~0.6k instructions
-- even when its memo has the text).
local ver_s, x_s, size_s = itos(ver), itos(x), itos(size)
-- The event, given to commit_write rather than queued (see publish_events). (An incr's
-- and a create's event carry the action as "c", as write.lua's first item event does
-- when the action is not "put".)
local c = op ~= "P" and action or nil
local carried, carried_fmt = nil, nil
if size <= event_value_max then carried, carried_fmt = value, fmt end
commit_write(op_id, now_s, action, stream_maxlen, rev, agent, now, cfg.em, dedupe_ms,
  "put", name, ver_s, carried, carried_fmt, c)
if history then
  keep_history(hkey, cur, cfg.hd)
elseif not cur then
  redis.call("ZADD", K_IDX, 0, name)
end
redis.call("HSET", ekey, "v", value, "m", entry_meta(ver_s, cr, rev_s, ct, now_s, x_s, agent, fmt))
if x > 0 then redis.call("ZADD", K_EXP, x, name) elseif cur and cur.x > 0 then redis.call("ZREM", K_EXP, name) end
if key_delta ~= 0 or byte_delta ~= 0 then
  redis.call("HSET", K_META, "rev", rev_s, "n", itos(n_keys + key_delta), "b", itos(n_bytes + byte_delta))
else -- (a value replaced by one of the same size: the counts are as stored)
  redis.call("HSET", K_META, "rev", rev_s)
end
-- The op record, write.lua's for one written item: a put's or a create's with no
-- values, an incr's or a merge's with its new value, which its reply has too
-- (write.lua's "echo" of a computed value). (One concatenation: every string made on the
-- way is hashed and interned; an empty part adds none.)
local counts, packed, vout, fout = "1 0 0", "", "", ""
if computed then counts, packed, vout, fout = "1 0 1", one_value_packed("1", value, "json"), value, "json" end
redis.call("HSET", K_OPS, op_id, record_head(digest, rev_s, now_s, counts) .. written_record(ver_s, cr, ct, x_s, size_s) .. "|" .. packed)
-- (a computed value longer than PACKED_VALUE_MAX goes out in the table)
if #vout > PACKED_VALUE_MAX then return { "ok", rev, due, 1, "w", ver, cr, rev_s, ct, now_s, x, size, vout, fout, 0 } end
return "ok " .. rev_s .. " " .. (due == 0 and "0" or itos(due)) .. " w " .. ver_s .. " " .. cr .. " " .. rev_s .. " "
  .. ct .. " " .. now_s .. " " .. x_s .. " " .. size_s .. " " .. fout .. " " .. vout
