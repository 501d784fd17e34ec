--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell +items(entry hist)
--! args: agent audit_maxlen token batch +items(key)
--! returns: {"ok", token, names...} | {"done"} | {"nons"} | {"denied", granted}
--
-- Rebuilds the eviction-order index (K_LRU: entry name -> revision of its last write) of
-- a namespace switched to evict-oldest. Only evict-oldest namespaces keep that index
-- (write.lua); ns.lua "update" starts it empty and leaves "lx" (a token naming the
-- switch) in K_META until this script has added every entry listed in the key index, by
-- the revision of its last write (mr). Writes since the switch added theirs already,
-- with a newer revision: ZADD NX keeps them. Names cannot be built in Lua, so each call
-- returns the next batch of the key index's names (in order, after the last name passed
-- in) for the caller to pass back, and the call that finds none left removes "lx".
-- token: the "lx" the caller's
-- walk started from ("" to start one); any other value means the policy was switched
-- again meanwhile (the index was emptied again), and the walk starts over.
local agent, audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
local token, batch = ARGV[3], int_arg(ARGV[4], "batch")
local meta = load_meta()
if not meta then return { "nons" } end
audit_maxlen = stored_limit(meta[3], audit_maxlen) -- the namespace's retention
local denied = deny_reply(agent, meta[2], LEVEL_RANK.write, "lru_rebuild", nil, audit_maxlen)
if denied then return denied end
local lx = read_call("HGET", K_META, "lx")
if not lx then return { "done" } end

local n = (#KEYS - N_FIXED) / 2
local from = "-"
if token == lx and n > 0 then
  -- Everything is read (and K_LRU's type checked) before the first write.
  local found = {}
  for j = 1, n do
    local name, ekey = ARGV[4 + j], KEYS[N_FIXED + 2 * j - 1]
    if read_call("ZSCORE", K_IDX, name) then -- still listed (not deleted since)
      local e = read_entry(ekey, 0) -- (now = 0: expired entries are ordered too)
      if e then
        found[#found + 1] = e.mr
        found[#found + 1] = name
      end
    end
  end
  require_kinds({ K_LRU, "zset" })
  -- In chunks: unpack() of more than ~8,000 values fails (LUAI_MAXCSTACK).
  for c = 1, #found, 512 do
    redis.call("ZADD", K_LRU, "NX", unpack(found, c, math.min(c + 511, #found)))
  end
  from = "(" .. ARGV[4 + n]
end
local names = read_call("ZRANGEBYLEX", K_IDX, from, "+", "LIMIT", 0, batch)
if #names == 0 then
  redis.call("HDEL", K_META, "lx")
  return { "done" }
end
local reply = { "ok", lx }
for _, name in ipairs(names) do reply[#reply + 1] = name end
return reply
