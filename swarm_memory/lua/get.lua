--! keys: meta acl stats exp audit lease +items(entry)
--! args: agent audit_maxlen
--! returns: {"ok", sweep_due, ...} | {"nons"} | {"denied", granted}
-- The get of one stored entry (its value at most PACKED_VALUE_MAX bytes) answers "ok"
-- packed, "ok <due> <len(m)> <m><v>" (one string: Redis converts a table reply at ~6k
-- instructions, a string at ~0.4k; _ops/replies.py unpack_get reads it as the array it
-- stands for).
--
-- get and get_many, apart from read.lua (stop 22): only the names a get uses (each name
-- a call passes costs the server ~0.5-1.2k instructions: no key index, no history
-- names) and no action argument (docs/performance.md, "Server cost of a get").
-- Permission-checked like every read (DESIGN.md decision 8); expired entries read as
-- absent even before the sweeper removes them.
--   +items -> {"ok", due, (m, value | "")...}: per item the packed entry as stored, its
--             metadata "m" and value "v" (read_entry in _lib.lua), or "" = absent
-- The client parses "m" strictly (records.packed_entry: CorruptData naming the key);
-- only the expiry is read here. An entry stored field by field (before "m") is checked
-- here and sent packed.
local agent = ARGV[1]
local have = read_access(agent) -- (one HMGET of the ACL hash while it has its marker)
if not have then return { "nons" } end
if have < LEVEL_RANK.read then
  -- A denial's record is kept as the namespace's retention says, else the caller's.
  return denial(agent, have, "get", nil, nil, int_arg(ARGV[2], "audit_maxlen"))
end
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
      m, v = entry_meta(itos(e.ver), e.cr, e.mr, e.ct, e.mt, itos(e.x), e.by, e.f), e.v -- (text: see unpack_entry)
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
