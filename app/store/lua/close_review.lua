-- A security reviewer closes the review a break-glass use opened.
-- KEYS[6] shard reviews index. ARGV: rid, actor, via, note.
local rid, actor, via, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
if r.review_open ~= '1' then return reply('NOOP', 'no_open_review') end
if actor == r.requester then return reply('SOD') end
set(r, 'review_open', 0)
set(r, 'reviewed_by', actor)
set(r, 'review_note', note)
redis.call('ZREM', KEYS[6], rid)
append_event(r, rid, now, 'review_closed', actor, 'security', via, r.state, note, r.state)
return reply('OK')
