-- A request that was refused before it existed (a velocity limit, the policy) is a security
-- event too: audited in the target's shard, with no request behind it (rid is empty).
-- Standalone (common.lua is not prepended): it changes no request.
-- KEYS[1] the shard's audit stream, KEYS[2] its counter.
-- ARGV: actor, via, role, ticket, action, target, reason.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = redis.call('INCR', KEYS[2])
local event = {
  seq = seq, rid = '', kind = 'open_refused', at = now,
  actor = ARGV[1], role = ARGV[3], via = ARGV[2],
  ticket = ARGV[4], action = ARGV[5], target = ARGV[6],
  tier = '', from = '', to = '', reason = ARGV[7], outcome = 'refused',
}
redis.call('XADD', KEYS[1], '*', 'seq', seq, 'e', cjson.encode(event))
return seq
