--! keys: meta acl stats idx exp audit lease +items(entry hist)
--! args: agent audit_maxlen action +args
--! returns: {"ok", sweep_due, ...} | {"nons"} | {"denied", granted}
--
-- Every read path but get / get_many (lua/get.lua), permission-checked like writes
-- (DESIGN.md decision 8). Expired entries read as absent even before the sweeper removes
-- them. Its fixed keys are the seven of the sixteen namespace names it uses (keys.py,
-- NamespaceKeys.read_fixed; _lib.lua).
--   get +items                 -> {"ok", due, (m, value | "")...}  get.lua's answer (not
--                                 packed), for the gets it sends here ({"general"})
--   exists +items              -> {"ok", due, 0|1 ...}
--   version 1 item, ARGV ver   -> {"ok", due, entry}  (current or from history)
--   history 1 item             -> {"ok", due, entry (current), field, value, ...} (raw HGETALL)
--   page  ARGV after, upto, n  -> {"ok", due, last_scanned, key...}  (lexicographic, live only)
local agent, audit_maxlen, action = ARGV[1], int_arg(ARGV[2], "audit_maxlen"), ARGV[3]
local have = read_access(agent) -- (one HMGET of the ACL hash while it has its marker)
if not have then return { "nons" } end
-- A denial's record is kept as the namespace's retention says (nil: read it then).
if have < LEVEL_RANK.read then return denial(agent, have, action, nil, nil, audit_maxlen) end
-- The clock is read when something is compared with it (now_ms: once per call).
local reply = { "ok", sweep_due(nil) }

local function add_entry(e)
  for _, x in ipairs(entry_reply(e)) do reply[#reply + 1] = x end
end

if action == "get" then
  -- Each entry's metadata as its "m" text (a legacy entry's too, packed: get.lua sends it
  -- so; the client parses either spelling) and its value; expired ones read as absent.
  for i = N_FIXED + 1, #KEYS, 2 do
    local e = read_entry(KEYS[i], now_ms())
    if e then
      reply[#reply + 1] = entry_text(e)
      reply[#reply + 1] = e.v
    else
      reply[#reply + 1] = ""
    end
  end
elseif action == "exists" then
  for i = N_FIXED + 1, #KEYS, 2 do
    local e = read_entry(KEYS[i], now_ms())
    reply[#reply + 1] = e and 1 or 0
  end
elseif action == "version" then
  local want = int_arg(ARGV[4], "version")
  local cur = read_entry(KEYS[N_FIXED + 1], now_ms())
  if cur and cur.ver == want then
    add_entry(cur)
  elseif cur then
    local h = read_call("HMGET", KEYS[N_FIXED + 2], "m" .. want, "v" .. want)
    if h[1] then
      reply[#reply + 1] = want
      reply[#reply + 1] = h[1]
      reply[#reply + 1] = h[2]
    else
      reply[#reply + 1] = ""
    end
  else
    reply[#reply + 1] = ""
  end
elseif action == "history" then
  local cur = read_entry(KEYS[N_FIXED + 1], now_ms())
  add_entry(cur)
  if cur then
    -- Raw field/value pairs: "m<ver>" -> packed metadata, "v<ver>" -> value.
    for _, x in ipairs(read_call("HGETALL", KEYS[N_FIXED + 2])) do reply[#reply + 1] = x end
  end
elseif action == "page" then
  local after, upto, limit = ARGV[4], ARGV[5], int_arg(ARGV[6], "limit")
  local names = read_call("ZRANGEBYLEX", K_IDX, after, upto, "LIMIT", 0, limit)
  -- A short page is the last one: no cursor, no extra round trip.
  if #names == limit then reply[#reply + 1] = names[#names] else reply[#reply + 1] = "" end
  for _, name in ipairs(names) do
    local x = redis.call("ZSCORE", K_EXP, name)
    if not x or tonumber(x) > now_ms() then reply[#reply + 1] = name end
  end
else
  error("swarm_memory: unknown read action " .. tostring(action))
end
return reply
