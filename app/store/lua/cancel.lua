-- The requester (or, with `override`, someone the caller allowed) cancels an open request.
-- ARGV: rid, actor, via, role, override (0|1).
local rid, actor, via, role = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor ~= r.requester and ARGV[5] ~= '1' then return reply('NOT_REQUESTER') end
local from = r.state
set(r, 'state', 'cancelled')
set(r, 'decided_by', actor)
set(r, 'decided_at', now)
set(r, 'finished_at', now)
reindex(r, rid)
append_event(r, rid, now, 'cancelled', actor, role, via, from, '', r.state)
return reply('OK')
