-- Seal audit events: append their macs to a shard's seal list, unless another sealer got there
-- first (compare-and-set) or the list was cut back. Standalone: not a gate script, common.lua is
-- not prepended. The macs are computed in Python (Lua has no SHA-256; the key never comes to
-- Redis); see app/audit/chain.py for why this keeps one consistent chain under any number of
-- sealers, and why a sealed event is never sealed again.
--
-- KEYS[1] the shard's seal list; KEYS[2] its sealed mark (the longest the list ever was).
-- ARGV[1] the list length the sealer read; ARGV[2] the last seal it read ('' when none);
-- ARGV[3..] the new seals, in order (none: only record the list's length in the mark).
-- Returns the number of seals appended: 0 when the list moved on (the other sealer won);
-- -1 when the list is shorter than the mark (seals were removed) or the mark is not a count:
-- nothing is sealed then, since what follows the cut may be forged.

local SEALS, MARK = KEYS[1], KEYS[2]
local expected_length = tonumber(ARGV[1])
if expected_length == nil or #ARGV < 2 then
  return redis.error_reply('ERR seal.lua: expects a length, the last seal and new seals')
end

local length = redis.call('LLEN', SEALS)
local raw_mark = redis.call('GET', MARK)
local mark = 0
if raw_mark then
  if not string.match(raw_mark, '^[0-9]+$') then return -1 end
  mark = tonumber(raw_mark)
end
if length < mark then return -1 end

if length ~= expected_length then return 0 end
local last = ''
if expected_length > 0 then last = redis.call('LINDEX', SEALS, -1) end
if last ~= ARGV[2] then return 0 end

-- Check every seal before writing any: the list is appended whole or not at all.
for i = 3, #ARGV do
  if #ARGV[i] ~= 64 or not string.match(ARGV[i], '^[0-9a-f]+$') then
    return redis.error_reply('ERR seal.lua: argument ' .. i .. ' is not a hex HMAC-SHA256')
  end
end

if #ARGV >= 3 then redis.call('RPUSH', SEALS, unpack(ARGV, 3)) end
local sealed = length + #ARGV - 2
if sealed > mark then redis.call('SET', MARK, sealed) end
return #ARGV - 2
