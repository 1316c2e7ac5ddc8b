-- After a change (or one that may have happened, or one being made), the owner says "This
-- wasn't me": flag the target and record the dispute.
-- KEYS[6] target's fraud flag. ARGV: rid, actor, via, flag_window_ms.
local rid, actor, via = ARGV[1], ARGV[2], ARGV[3]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
if actor ~= r.owner then return refuse(r, rid, now, 'NOT_OWNER', '', 'dispute', actor, via) end
-- Any outcome after which the account may have changed can be disputed (models.MAY_HAVE_CHANGED),
-- and so can a change being made right now: its result lands disputed.
local running = r.state == 'executing'
if not running and r.state ~= 'completed' and r.state ~= 'unknown' and r.state ~= 'interrupted' then
  return reply('DECIDED', r.state)
end
if num(r, 'disputed_at') > 0 then return reply('NOOP', 'already_disputed') end
if not running and now >= num(r, 'dispute_until') then return reply('EXPIRED', 'dispute_window') end
set(r, 'disputed_at', now)
flag_target(KEYS[6], rid, now, tonumber(ARGV[4]), r.target)
append_event(r, rid, now, 'disputed', actor, 'owner', via, r.state, 'owner_disputed', r.state)
return reply('OK')
