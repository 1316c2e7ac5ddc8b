-- Closes the review a break-glass use opened, once the request finished: by a security
-- reviewer from chat, or by an operator from the CLI (recorded as the operator, never as a
-- reviewer they name). KEYS[6] shard reviews index.
-- ARGV: rid, actor, via, note, role (security|operator), event kind.
local rid, actor, via, note, role, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
if r.review_open ~= '1' then return reply('NOOP', 'no_open_review') end
-- Nobody reviews a change they are part of: who broke the glass, whose account it was, or
-- anyone who decided it (approved, denied, cancelled, confirmed as owner).
if actor == r.requester or actor == r.target or actor == r.owner then
  return refuse(r, rid, now, 'SOD', '', 'review', actor, via)
end
if r.decided_by == actor or r['appr:' .. actor] or r['wdrn:' .. actor]
    or r['apprwait:' .. actor] then
  return refuse(r, rid, now, 'SOD', 'decided', 'review', actor, via)
end
-- What is reviewed is what was done: not before the request has finished.
if is_open(r.state) or r.state == 'executing' then return reply('NOT_FINISHED', r.state) end
set(r, 'review_open', 0)
set(r, 'reviewed_by', actor)
set(r, 'review_note', note)
redis.call('ZREM', KEYS[6], rid)
keep_finished(r)
append_event(r, rid, now, kind, actor, role, via, r.state, note, r.state)
return reply('OK')
