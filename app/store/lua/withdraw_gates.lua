-- A gate counts only while its giver still holds the standing that let them give it (invariant
-- 3): stop counting approvals (and the owner's confirmation) whose givers the directory now says
-- are disabled or lack the role. Checked by the service against the directory just before a
-- claim; each withdrawal is its own audit event, and a ready request goes back to pending.
-- ARGV: rid, approver ids (comma-separated, may be empty), owner (0|1), why (for the cards),
-- step-up (0|1: the manager who attested lost the standing to, so the owner's step-up no longer
-- counts; the owner may verify again).
local rid, why = ARGV[1], ARGV[4]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
if not is_open(r.state) then return reply('DECIDED', r.state) end
local withdrawn = {}
for id in string.gmatch(ARGV[2], '[^,]+') do
  if r['appr:' .. id] then
    redis.call('HDEL', REQ, 'appr:' .. id)
    r['appr:' .. id] = nil
    set(r, 'wdrn:' .. id, 1)  -- still a decider of this request: never its break-glass reviewer
    table.insert(withdrawn, { 'approval_withdrawn', id, 'approver' })
  end
end
if ARGV[3] == '1' and num(r, 'owner_at') > 0 then
  set(r, 'owner_at', 0)
  table.insert(withdrawn, { 'owner_confirmation_withdrawn', r.owner or '', 'owner' })
end
if ARGV[5] == '1' and num(r, 'stepup_at') > 0 then
  set(r, 'stepup_at', 0)
  set(r, 'stepup_changed', now)
  table.insert(withdrawn, { 'step_up_withdrawn', r.stepup_manager or '', 'manager' })
end
if #withdrawn == 0 then return reply('NOOP') end
local from = r.state
if r.state == 'ready' and not gates_ok(r, now) then set(r, 'state', 'pending') end
set(r, 'gate_note', why)
reindex(r, rid)
for _, w in ipairs(withdrawn) do
  append_event(r, rid, now, w[1], w[2], w[3], '', from, 'giver_lapsed', r.state)
  from = r.state
end
return reply('OK')
