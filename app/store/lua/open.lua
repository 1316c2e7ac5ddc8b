-- Open a request: refuse a stale view of fraud flags or velocity, then write it with its event
-- and its entries in the shard's open-requests-by-person index (common.lua WHO, for `list`).
-- Per-requester velocity is not here: reserve_requester.lua holds the place beforehand.
-- KEYS[6] target's fraud flag, KEYS[7] target's history, KEYS[8] shard reviews index.
-- ARGV: rid, fields (JSON object of static fields), expected flag (0|1),
--       velocity checks (JSON [[window_ms, "action,action" or "", expected count], ...]),
--       request_ttl_ms, remind_after_ms, escalate_after_ms, breakglass (0|1), via,
--       history_keep_ms, actor role
local FLAG, HIST, REVIEWS = KEYS[6], KEYS[7], KEYS[8]
local rid = ARGV[1]
if redis.call('EXISTS', REQ) == 1 then return { 'EXISTS', '', {} } end
local now = now_ms()

-- Optimistic check: the policy was evaluated in Python on what Python read; if a fraud flag or
-- the target's history changed since, evaluate again rather than open a too-lenient request.
local flagged = redis.call('EXISTS', FLAG)
if tostring(flagged) ~= ARGV[3] then return { 'STALE', 'flag', {} } end
local fields = cjson.decode(ARGV[2])
for _, check in ipairs(cjson.decode(ARGV[4])) do
  local window, actions, expected = tonumber(check[1]), check[2], tonumber(check[3])
  local seen = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', HIST, now - window, '+inf')) do
    local action = string.match(member, '|(.*)$')
    if actions == '' or string.find(',' .. actions .. ',', ',' .. action .. ',', 1, true) then
      seen = seen + 1
    end
  end
  if seen ~= expected then return { 'STALE', 'velocity', {} } end
end

local r = {}
for field, value in pairs(fields) do r[field] = tostring(value) end
r.state = 'pending'
r.created_at = tostring(now)
r.expires_at = tostring(now + tonumber(ARGV[5]))
if tonumber(ARGV[6]) > 0 then r.remind_at = tostring(now + tonumber(ARGV[6])) end
if tonumber(ARGV[7]) > 0 then r.escalate_at = tostring(now + tonumber(ARGV[7])) end
r.events = '0'
if ARGV[8] == '1' then
  r.review_open = '1'
  redis.call('ZADD', REVIEWS, now, rid)
end
-- One HSET with every field (issue 12: a constant, small number of commands per open).
local flat = {}
for field, value in pairs(r) do
  flat[#flat + 1] = field
  flat[#flat + 1] = value
end
redis.call('HSET', REQ, unpack(flat))
ready_if_satisfied(r, now)

redis.call('ZADD', OPEN, now, rid)
index_who(r, rid)
redis.call('ZADD', HIST, now, rid .. '|' .. r.action)
redis.call('ZREMRANGEBYSCORE', HIST, '-inf', now - tonumber(ARGV[10]))
redis.call('PEXPIRE', HIST, tonumber(ARGV[10]))
reindex(r, rid)
local kind = 'opened'
if ARGV[8] == '1' then kind = 'breakglass_opened' end
append_event(r, rid, now, kind, r.requester, ARGV[11], ARGV[9], '', r.reason_code, r.state)
return reply('OK')
