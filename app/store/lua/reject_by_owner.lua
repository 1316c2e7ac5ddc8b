-- The owner of record answers "No, this wasn't me": reject, flag the target, all in one step.
-- KEYS[6] target's fraud flag. ARGV: rid, actor, via, flag_window_ms.
local rid, actor, via = ARGV[1], ARGV[2], ARGV[3]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor ~= r.owner then return refuse(r, rid, now, 'NOT_OWNER', '', 'reject', actor, via) end
local from = r.state
set(r, 'state', 'rejected_by_owner')
set(r, 'decided_by', actor)
set(r, 'decided_at', now)
set(r, 'finished_at', now)
flag_target(KEYS[6], rid, now, tonumber(ARGV[4]), r.target)
reindex(r, rid)
append_event(r, rid, now, 'rejected_by_owner', actor, 'owner', via, from, 'owner_denied', r.state)
return reply('OK')
