-- The requester, or anyone who may decide the request, cancels it while it is open.
-- ARGV: rid, actor, via, held roles (comma-separated).
local rid, actor, via = ARGV[1], ARGV[2], ARGV[3]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
local role = 'requester'
if actor ~= r.requester then
  -- Like deny: the account's owner answers "this wasn't me" (which flags and alerts) instead.
  if actor == r.target or actor == r.owner then
    return refuse(r, rid, now, 'SOD', '', 'cancel', actor, via)
  end
  role = decision_role(r, ARGV[4])
  if not role then return refuse(r, rid, now, 'NOT_REQUESTER', '', 'cancel', actor, via) end
end
local from = r.state
set(r, 'state', 'cancelled')
set(r, 'decided_by', actor)
set(r, 'decided_at', now)
set(r, 'finished_at', now)
reindex(r, rid)
append_event(r, rid, now, 'cancelled', actor, role, via, from, '', r.state)
return reply('OK')
