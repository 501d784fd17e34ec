--! keys: meta acl stats audit ops opst eph locks lockh lbell
--! args: agent limits name owner op_id held_x held_token
--! returns: {"ok"} | {"not_owned", holder} | {"nons"} | {"denied", granted}
-- A release's "ok" goes packed, as the string "ok" (Redis converts {"ok"} at ~4.4k
-- instructions, a string at ~0.4k; _ops/replies.py); a replay's is {"ok"}.
--
-- A lock's release (DESIGN.md decision 7; the lock's other actions are lock.lua's), in a
-- script of its own since stop 23: the ten names a release uses and no action or feed
-- argument (see acquire.lua).
--   limits: the write script's packed limits (write.lua: the dedupe window and the audit
--     limit are the ones read here)
--   name owner op_id held_x held_token (write) -> {"ok"} (replays of op_id too)
--     held_x, held_token: the expiry and token the acquire or last extend returned, ""
--     when the client has none (the record, when it is exactly this owner's, is then
--     read without parsing). A release rings K_LBELL with the lock's name, so waiters
--     wake at once; waiters also poll, so a lost doorbell only delays them.
local agent, limits = ARGV[1], int_fields(ARGV[2], 5, "limits")
local dedupe_ms, default_audit_maxlen = limits[1], limits[3]
-- (access_refused: one HMGET of the ACL hash; the namespace's stored audit limit is read
-- when a denial is recorded, this caller's is the fallback)
local refused = access_refused(agent, LEVEL_RANK.write, "lock_release", ARGV[3], default_audit_maxlen)
if refused then return refused end
local now = now_ms()
local name, owner, op_id, held_x, held_token = lock_name(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7]
-- The common release, without parsing the record (~25k instructions: each string
-- library call of the parse costs ~1.5-3k): the client sends the expiry and token its
-- acquire (or last extend) returned, so the record this owner holds alone is known
-- in full; equal to the stored text, byte for byte, it is that record (lock_record_text
-- builds both). Anything else (another holder, a shared lock, an expired or corrupt
-- record, a client sending "") takes the parse.
local raw = redis.pcall("HGET", K_LOCKH, name)
if type(raw) == "table" then corrupt(K_LOCKH, "holds the wrong type for HGET") end
-- (rec: the record without this owner's hold; the lone holder's release needs no
-- table for it: mine 0, rec nil, no holder left)
local rec, mine
if raw and held_token ~= "" and raw == lock_record_text("x", owner, agent, held_x, held_token) then
  local x = stored_int(held_x) -- (the text this library's acquire formatted: its memo)
  if x and x > now then mine = 0 end
end
if not mine then
  rec = read_lock_text(raw, now)
  mine = lock_holder(rec, owner)
end
if not mine then
  -- A replay (this op id released the lock already: its owner is gone from the record)
  -- or a lock this owner does not hold. Only here is the op record looked up: while the
  -- owner still holds the lock, its release has not run (a release removes the owner
  -- and records the op id in one call), which saves the common release an HGET.
  if read_call("HGET", K_OPS, op_id) then return { "ok" } end
  return lock_not_owned(rec)
end
-- The first writes, each refused with nothing written when its key is corrupt, the
-- ones before it undone then (so no TYPE or HGET checks them first: ~25k instructions
-- a release): the op record's purge index, the stats counter, the lease tie, the op
-- record (HSETNX: an op record already there, which only corrupt data leaves, stays as
-- it was), and the expiry index (K_LOCKS, last: its own undo would need its old score).
-- Each of these but HINCRBY replies 0 or 1, anything else (a table) is a refusal:
-- compared as numbers, with no type() call (a library call costs ~0.5k instructions).
-- (the hold's own lease tie: the token's text is the record's, which the client sent
-- when the record was read without a parse)
local member = lock_tie(agent, name, mine == 0 and held_token or itos(rec.holders[mine].token))
local now_s = itos(now)
local indexed = index_op(op_id, now_s)
local counted = redis.pcall("HINCRBY", K_STATS, "lock_release", "1")
if type(counted) == "table" then
  unindex_op(op_id, indexed)
  corrupt(K_STATS, "counter lock_release is not an integer, or the key not a hash")
end
-- The hold's lease tie goes (a tie per hold: the agent's other holds keep theirs). An
-- older client's tie of the agent and lock alone is not looked for here (one more
-- call a release); the reaper, a force release and the prune drop it
-- (docs/guarantees.md, 17).
local untied = redis.pcall("ZREM", K_EPH, member)
local recorded = (untied == 0 or untied == 1) and redis.pcall("HSETNX", K_OPS, op_id, "released")
local latest = 0
if mine > 0 then
  table.remove(rec.holders, mine)
  local holders = rec.holders
  for j = 1, #holders do if holders[j].x > latest then latest = holders[j].x end end
end
local unlisted = (recorded == 0 or recorded == 1) and (latest == 0
  and redis.pcall("ZREM", K_LOCKS, name) or redis.pcall("ZADD", K_LOCKS, itos(latest), name))
if unlisted ~= 0 and unlisted ~= 1 then
  unindex_op(op_id, indexed)
  if counted == 1 then redis.call("HDEL", K_STATS, "lock_release") else
    redis.call("HINCRBY", K_STATS, "lock_release", "-1") end
  if untied ~= 0 and untied ~= 1 then corrupt(K_EPH, "holds the wrong type for ZREM") end
  if untied == 1 then redis.call("ZADD", K_EPH, "0", member) end
  if recorded ~= 0 and recorded ~= 1 then corrupt(K_OPS, "holds the wrong type for HSETNX") end
  if recorded == 1 then redis.call("HDEL", K_OPS, op_id) end
  corrupt(K_LOCKS, "holds the wrong type for " .. (latest == 0 and "ZREM" or "ZADD"))
end
op_indexed(op_id, now_s, indexed)
if latest == 0 then
  redis.call("HDEL", K_LOCKH, name)
else
  write_lock_record(name, rec)
end
if rec then untie_lapsed(name, rec) end -- (none on the path without a parse: one live holder)
redis.call("SPUBLISH", K_LBELL, name)
-- The op records of releases are purged here as a write purges its own (purge_ops: up to
-- 64 past the namespace's dedupe window, amortized: on every 8th release by the stats
-- counter), or a namespace only locks use would keep every release's record: 2,200 after
-- 2,200 releases with a 1 s window, before stop 23. Last: every write of the release is
-- done, and nothing here can be refused (the list and the hash have their types).
-- (The meta hash is not otherwise read here: a wrong type is no window, never an error
-- after the writes.)
if counted % 8 == 0 then
  local dw = redis.pcall("HGET", K_META, "dw")
  if type(dw) ~= "string" then dw = nil end
  purge_ops(counted, now, stored_limit(dw, dedupe_ms), indexed == "l")
end
return "ok"
