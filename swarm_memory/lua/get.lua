--! keys: acl exp lease +items(entry)
--! args: agent
--! returns: {"ok", sweep_due, ...} | {"general"} | {"general", "identity"}
-- The get of one stored entry (its value at most PACKED_VALUE_MAX bytes) answers "ok"
-- packed, "ok <due> <len(m)> <m><v>" (one string: Redis converts a table reply at ~6k
-- instructions, a string at ~0.4k; _ops/replies.py unpack_get reads it as the array it
-- stands for).
--
-- get and get_many, apart from read.lua (stop 22), with only the names a get's common
-- path uses (each name a call passes costs the server ~1k instructions, an argument
-- ~0.5k): the ACL hash, the two indexes of the sweep hint and the entries. What needs
-- another name, it leaves to read.lua's "get", which answers the same: it answers
-- {"general"} having done nothing, and the client sends the same get there (one round
-- trip more, for those gets; _ops/entries.py _get):
--   - a caller below read: its denial is counted and audited (the stats, audit and meta
--     names);
--   - an ACL hash without its marker "#" (a namespace created by a version before stop 22
--     and not changed since, one being deleted, or none): the level and the namespace's
--     state are in meta;
--   - a caller whose Redis user is not the agent the call names: enter() answers
--     {"general", "identity"}, and read.lua's refusal is audited (docs/performance.md,
--     "Fewer Lua VM instructions, and a get's own names, stop 35").
-- Permission-checked like every read (DESIGN.md decision 8); expired entries read as
-- absent even before the sweeper removes them.
--   +items -> {"ok", due, (m, value | "")...}: per item the packed entry as stored, its
--             metadata "m" and value "v" (read_entry in _lib.lua), or "" = absent
-- The client parses "m" strictly (records.packed_entry: CorruptData naming the key);
-- only the expiry is read here. An entry stored field by field (before "m") is checked
-- here and sent packed.
local agent = ARGV[1]
-- The caller's level and the namespace's default in one HMGET of the ACL hash (read_access
-- without its fallback to meta: false without the marker).
local have = read_access(agent, true)
if not have or have < LEVEL_RANK.read then return { "general" } end
-- The sweep hint as sweep_due(nil) gives it, its common case inline: neither the expiry
-- index nor the lease index exists (one EXISTS, no function call).
local indexed = redis.call("EXISTS", K_EXP, K_LEASE) ~= 0
local due = 0
if indexed then due = sweep_due_read(nil) end -- (no second EXISTS)
-- Each entry goes out as stored, its packed metadata and its value; only its expiry is
-- read here, and only when the namespace has an expiry index: every write that gives an
-- entry an expiry adds it to that index in the same script, and only a script that
-- removes the entry (or finds it gone) takes it out, so without the index no entry here
-- can expire. The common get (no expiry index, no lease) reads no pattern and no TIME.
-- (Made with room for one entry: a get's reply grows no table; nil ends the reply. Made
-- where it is first needed: the get of one stored entry answers packed, with no table.)
local reply, r = nil, 2
for i = N_FIXED + 1, #KEYS do
  local key = KEYS[i]
  local h = redis.pcall("HMGET", key, "m", "v") -- (a table either way: read_call's check)
  if h.err then corrupt(key, "holds the wrong type for HMGET") end
  local m, v = h[1], h[2]
  if m then
    -- (Unread, "m" is parsed by the client; only "" would pass as its absent marker.)
    if not v or m == "" then corrupt(key, "malformed entry") end
    if indexed then
      local x = string.match(m, "^%d+ %d+ %d* %d+ %d* (%d+) ")
      if not x then corrupt(key, "malformed entry") end
      if x ~= "0" then
        x = x + 0 -- (digits, matched above: one strtod; tonumber() takes two)
        if x > 0 and x <= now_ms() then m = nil end
      end
    end
  elseif v or redis.call("EXISTS", key) == 1 then -- stored before "m", or corrupt
    local e = read_legacy_entry(key)
    if e and not (e.x > 0 and e.x <= now_ms()) then
      m, v = entry_text(e), e.v
    end
  end
  if m and i == N_FIXED + 1 and i == #KEYS and #v <= PACKED_VALUE_MAX then
    return "ok " .. itos(due) .. " " .. itos(#m) .. " " .. m .. v
  end
  if not reply then reply = { "ok", due, nil, nil } end
  if m then
    reply[r + 1], reply[r + 2], r = m, v, r + 2
  else
    reply[r + 1], r = "", r + 1
  end
end
return reply or { "ok", due }
