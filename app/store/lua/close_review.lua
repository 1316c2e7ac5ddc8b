-- A security reviewer closes the review a break-glass use opened, once the request finished.
-- KEYS[6] shard reviews index. ARGV: rid, actor, via, note.
local rid, actor, via, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
if r.review_open ~= '1' then return reply('NOOP', 'no_open_review') end
-- Nobody reviews a change they are part of: who broke the glass, or whose account it was.
if actor == r.requester or actor == r.target or actor == r.owner then return reply('SOD') end
-- What is reviewed is what was done: not before the request has finished.
if is_open(r.state) or r.state == 'executing' then return reply('NOT_FINISHED', r.state) end
set(r, 'review_open', 0)
set(r, 'reviewed_by', actor)
set(r, 'review_note', note)
redis.call('ZREM', KEYS[6], rid)
keep_finished(r)
append_event(r, rid, now, 'review_closed', actor, 'security', via, r.state, note, r.state)
return reply('OK')
