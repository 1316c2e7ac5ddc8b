-- Claim execution: invariant 1 (every gate valid at this instant, by Redis TIME) and invariant 3
-- (ready -> executing happens once) in one atomic step. ARGV: rid, actor, lease_ms, token.
local rid, actor = ARGV[1], ARGV[2]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if r.state ~= 'ready' then return reply('NOT_READY') end
-- The account was flagged after this request opened: the policy gave it a milder plan than it
-- now would (a flagged target gets the strictest tier). Stop it; a new request gets the right one.
if flagged_since_open(r, now) then
  set(r, 'state', 'cancelled')
  set(r, 'decided_by', 'twokey')
  set(r, 'decided_at', now)
  set(r, 'finished_at', now)
  reindex(r, rid)
  append_event(r, rid, now, 'stopped', 'twokey', 'system', '', 'ready', 'target_flagged', 'cancelled')
  return reply('FLAGGED')
end
if not gates_ok(r, now) then
  -- An approval or the owner's confirmation lapsed while waiting: back to pending, truthfully.
  set(r, 'state', 'pending')
  reindex(r, rid)
  append_event(r, rid, now, 'approval_lapsed', 'twokey', 'system', '', 'ready', 'approval_ttl', 'pending')
  return reply('LAPSED')
end
set(r, 'state', 'executing')
set(r, 'claimed_at', now)
set(r, 'lease_until', now + tonumber(ARGV[3]))
set(r, 'claim_token', ARGV[4])
reindex(r, rid)
append_event(r, rid, now, 'execution_started', actor, 'system', '', 'ready', '', 'executing')
return reply('OK')
