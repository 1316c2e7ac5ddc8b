-- An approver's step-up answered (a push to their enrolled device, as the IdP reported it): an
-- approval waiting for it counts from now on, with the time it was given (so it still expires
-- approval_ttl after the click), or is dropped. ARGV: rid, approver, outcome
-- (approved|rejected|timeout|unavailable), via (the verifier).
local rid, approver, outcome, via = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, approver)
if refused then return refused end
local wait = 'apprwait:' .. approver
local at = tonumber(r[wait] or '0') or 0
if at == 0 then return reply('NOOP', 'not_waiting') end
redis.call('HDEL', REQ, wait)
r[wait] = nil
local from = r.state
local late = now >= at + num(r, 'approval_ttl_ms')
if late or outcome ~= 'approved' then
  set(r, 'wdrn:' .. approver, 1)  -- still a decider of this request: never its reviewer
  reindex(r, rid)
  append_event(r, rid, now, 'approver_step_up_failed', approver, 'approver', via, from,
    late and 'late' or outcome, r.state)
  if late then return reply('LATE') end
  return reply('FAILED', outcome)
end
set(r, 'appr:' .. approver, at)
ready_if_satisfied(r, now)
reindex(r, rid)
append_event(r, rid, now, 'approver_verified', approver, 'approver', via, from, outcome, r.state)
return reply('OK')
