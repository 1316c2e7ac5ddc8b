-- Reserve a place in a requester's velocity history before their request opens, atomically
-- against the per-requester limits, so parallel opens by one agent cannot all slip under a
-- limit. Standalone: not a gate script, common.lua is not prepended. The history lives in the
-- requester's own slot (their requests are spread over every target shard), so this runs
-- before open.lua; the caller removes the entry again if the request is not opened after all.
--
-- KEYS[1] the requester's history: sorted set "<rid>|<action>" -> reserved at (ms).
-- ARGV[1] the entry ("<rid>|<action>"), ARGV[2] how long history is kept (ms),
-- ARGV[3] limits (JSON [[window_ms, "action,action" or "" for all, limit, refuse (0|1)], ...]).
-- Returns { admitted (0|1), count seen before this entry for each limit, in order }: not
-- admitted when a refusing limit that applies is already reached (nothing is written then).

local HIST = KEYS[1]
local entry, keep = ARGV[1], tonumber(ARGV[2])
local action = string.match(entry, '|([^|]*)$')
if not action or not keep then
  return redis.error_reply('ERR reserve_requester.lua: expects "<rid>|<action>" and a keep time')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function listed(actions, name)
  return actions == '' or string.find(',' .. actions .. ',', ',' .. name .. ',', 1, true) ~= nil
end

local admitted, counts = 1, {}
for _, limit in ipairs(cjson.decode(ARGV[3])) do
  local window, actions, most, refuse = tonumber(limit[1]), limit[2], tonumber(limit[3]), limit[4]
  local seen = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', HIST, now - window, '+inf')) do
    if listed(actions, string.match(member, '|([^|]*)$') or '') then seen = seen + 1 end
  end
  table.insert(counts, seen)
  if refuse == 1 and listed(actions, action) and seen >= most then admitted = 0 end
end
if admitted == 1 then
  redis.call('ZADD', HIST, now, entry)
  redis.call('ZREMRANGEBYSCORE', HIST, '-inf', now - keep)
  redis.call('PEXPIRE', HIST, keep)
end
local result = { admitted }
for _, seen in ipairs(counts) do table.insert(result, seen) end
return result
