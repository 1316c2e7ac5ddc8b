-- Seal audit events: append their macs to a shard's seal list, unless another sealer got there
-- first (compare-and-set). Standalone: not a gate script, common.lua is not prepended.
-- The macs are computed in Python (Lua has no SHA-256; the key never comes to Redis); see
-- app/audit/chain.py for why this keeps one consistent chain under any number of sealers.
--
-- KEYS[1] the shard's seal list.
-- ARGV[1] the list length the sealer read; ARGV[2] the last seal it read ('' when none);
-- ARGV[3..] the new seals, in order.
-- Returns the number of seals appended: 0 when the list moved on (the other sealer won).

local SEALS = KEYS[1]
local expected_length = tonumber(ARGV[1])
if expected_length == nil or #ARGV < 3 then
  return redis.error_reply('ERR seal.lua: expects a length, the last seal and new seals')
end

if redis.call('LLEN', SEALS) ~= expected_length then return 0 end
local last = ''
if expected_length > 0 then last = redis.call('LINDEX', SEALS, -1) end
if last ~= ARGV[2] then return 0 end

-- Check every seal before writing any: the list is appended whole or not at all.
for i = 3, #ARGV do
  if #ARGV[i] ~= 64 or not string.match(ARGV[i], '^[0-9a-f]+$') then
    return redis.error_reply('ERR seal.lua: argument ' .. i .. ' is not a hex HMAC-SHA256')
  end
end

redis.call('RPUSH', SEALS, unpack(ARGV, 3))
return #ARGV - 2
