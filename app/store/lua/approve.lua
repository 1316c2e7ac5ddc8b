-- An approver approves. Separation of duties and the approver role are checked here, on the
-- stored request, at the instant of the change; the caller passes the roles the directory says
-- the actor holds. ARGV: rid, actor, via, held roles (comma-separated).
local rid, actor, via = ARGV[1], ARGV[2], ARGV[3]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor == r.requester or actor == r.target or actor == r.owner then
  return refuse(r, rid, now, 'SOD', '', 'approve', actor, via)
end
local role = decision_role(r, ARGV[4])
if not role then return refuse(r, rid, now, 'ROLE', allowed_roles(r), 'approve', actor, via) end
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
