-- An approver denies, with a reason. ARGV: rid, actor, via, held roles, reason.
local rid, actor, via, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor == r.requester or actor == r.target or actor == r.owner then
  return refuse(r, rid, now, 'SOD', '', 'deny', actor, via)
end
local role = decision_role(r, ARGV[4])
if not role then return refuse(r, rid, now, 'ROLE', allowed_roles(r), 'deny', actor, via) end
local from = r.state
set(r, 'state', 'denied')
set(r, 'decided_by', actor)
set(r, 'decided_at', now)
set(r, 'finished_at', now)
set(r, 'decision_reason', reason)
reindex(r, rid)
append_event(r, rid, now, 'denied', actor, role, via, from, reason, r.state)
return reply('OK')
