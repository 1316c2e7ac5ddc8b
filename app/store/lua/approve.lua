-- An approver approves. Separation of duties and the approver role are checked here, on the
-- stored request, at the instant of the change; the caller passes the roles the directory says
-- the actor holds. ARGV: rid, actor, via, held roles (comma-separated).
-- A tier with an approver step-up keeps the approval waiting (apprwait:<actor>) until the
-- approver passed it (verify_approver.lua); until then it does not count.
local rid, actor, via = ARGV[1], ARGV[2], ARGV[3]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor == r.requester or actor == r.target or actor == r.owner
    or actor == (r.stepup_manager or '') then  -- the manager attesting the owner's step-up
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
if r.needs_apprv == '1' then
  local wait = 'apprwait:' .. actor
  if r[wait] and now < tonumber(r[wait]) + num(r, 'approval_ttl_ms') then
    return reply('NOOP', 'awaiting_verification')
  end
  set(r, wait, now)
  reindex(r, rid)
  append_event(r, rid, now, 'approved_unverified', actor, role, via, from, 'approver_step_up', r.state)
  return reply('OK', 'awaiting_verification')
end
set(r, field, now)
ready_if_satisfied(r, now)
reindex(r, rid)
append_event(r, rid, now, 'approved', actor, role, via, from, '', r.state)
return reply('OK')
