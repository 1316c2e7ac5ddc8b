-- An approver approves. Role is checked by the caller against the directory; separation of
-- duties is checked here again, on the stored request, at the instant of the change.
-- ARGV: rid, actor, via, role.
local rid, actor, via, role = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor == r.requester or actor == r.target or actor == r.owner then return reply('SOD') end
local field = 'appr:' .. actor
if r[field] and now < tonumber(r[field]) + num(r, 'approval_ttl_ms') then
  return reply('NOOP', 'already_approved')
end
if valid_approvals(r, now) >= num(r, 'approvals_needed') then
  return reply('NOOP', 'enough_approvals')
end
local from = r.state
set(r, field, now)
ready_if_satisfied(r, now)
reindex(r, rid)
append_event(r, rid, now, 'approved', actor, role, via, from, '', r.state)
return reply('OK')
