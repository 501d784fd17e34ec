--! keys: meta acl stats idx exp audit lease +items(entry hist)
--! args: agent audit_maxlen action +args
--! returns: {"ok", sweep_due, ...} | {"nons"} | {"denied", granted}
--
-- Every read path, permission-checked like writes (DESIGN.md decision 8). Expired entries
-- read as absent even before the sweeper removes them. Its fixed keys are the seven of
-- the sixteen namespace names it uses (keys.py, NamespaceKeys.read_fixed; _lib.lua).
--   get   +items               -> {"ok", due, entry...} one flat entry per item ({""} = absent)
--   exists +items              -> {"ok", due, 0|1 ...}
--   version 1 item, ARGV ver   -> {"ok", due, entry}  (current or from history)
--   history 1 item             -> {"ok", due, entry (current), field, value, ...} (raw HGETALL)
--   page  ARGV after, upto, n  -> {"ok", due, last_scanned, key...}  (lexicographic, live only)
local agent, audit_maxlen, action = ARGV[1], int_arg(ARGV[2], "audit_maxlen"), ARGV[3]
local meta = load_access()
if not meta then return { "nons" } end
-- A denial's record is kept as the namespace's retention says (nil: read it then).
local denied = deny_reply(agent, meta[2], LEVEL_RANK.read, action, nil, nil, audit_maxlen)
if denied then return denied end
-- The clock is read when something is compared with it (now_ms: once per call): a get
-- of entries that do not expire, in a namespace without expiring entries or leases,
-- reads no TIME.
local reply = { "ok", sweep_due(nil) }

local function add_entry(e)
  for _, x in ipairs(entry_reply(e)) do reply[#reply + 1] = x end
end

if action == "get" then
  -- The stored fields go out as they are, in reply order: only the expiry is a number
  -- here; the client parses the others strictly (records.entry: CorruptData naming the
  -- key). Converting them here and back cost more than the rest of a get.
  for i = N_FIXED + 1, #KEYS, 2 do
    local key = KEYS[i]
    local h = read_call("HMGET", key, "ver", "cr", "mr", "ct", "mt", "x", "by", "f", "v")
    if not h[1] then
      if h[9] or h[8] or h[2] or h[3] or h[5] or h[6] then corrupt(key, "entry without a version") end
      reply[#reply + 1] = ""
    else
      local x = stored_int(h[6])
      if not (x and h[2] and h[3] and h[4] and h[5] and h[7] and h[8] and h[9]) then
        corrupt(key, "malformed entry")
      end
      if x > 0 and x <= now_ms() then
        reply[#reply + 1] = ""
      else
        local n = #reply
        for j = 1, 9 do reply[n + j] = h[j] end
      end
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
