-- The owner of record answers "Yes, it was me". ARGV: rid, actor, via.
local rid, actor, via = ARGV[1], ARGV[2], ARGV[3]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if actor ~= r.owner then return refuse(r, rid, now, 'NOT_OWNER', '', 'confirm', actor, via) end
if r.needs_owner ~= '1' then return reply('NOOP', 'not_needed') end
if owner_ok(r, now) then return reply('NOOP', 'already_confirmed') end
local from = r.state
set(r, 'owner_at', now)
ready_if_satisfied(r, now)
reindex(r, rid)
append_event(r, rid, now, 'owner_confirmed', actor, 'owner', via, from, '', r.state)
return reply('OK')
