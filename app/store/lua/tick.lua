-- The sweeper's one step on a due request; at most one change (and one event) per call, and
-- safe when any number of replicas tick the same request at once: each change is guarded by
-- the state and times read here, and flags (reminded, escalated) make reminders happen once.
-- ARGV: rid. Replies EXPIRED, INTERRUPTED, REMIND, ESCALATE, CLAIMABLE, LAPSED or NOTHING.
local rid = ARGV[1]
local r = load_request()
if not r then
  redis.call('ZREM', DUE, rid)
  redis.call('ZREM', OPEN, rid)
  return { 'NOTFOUND', '', {} }
end
local now = now_ms()
if expire_if_due(r, rid, now, 'twokey') then return reply('EXPIRED') end
if r.state == 'executing' then
  if now >= num(r, 'lease_until') then
    -- Invariant 3: an execution whose process died is never re-run; it ends interrupted.
    set(r, 'state', 'interrupted')
    set(r, 'finished_at', now)
    -- It may have changed the account: the owner may dispute it like a completed change.
    set(r, 'dispute_until', now + num(r, 'dispute_window_ms'))
    reindex(r, rid)
    append_event(r, rid, now, 'interrupted', 'twokey', 'system', '', 'executing', 'lease_expired', 'interrupted')
    return reply('INTERRUPTED')
  end
  reindex(r, rid)
  return reply('NOTHING')
end
if not is_open(r.state) then
  reindex(r, rid)
  return reply('NOTHING')
end
if r.state == 'ready' and not gates_ok(r, now) then
  set(r, 'state', 'pending')
  reindex(r, rid)
  append_event(r, rid, now, 'approval_lapsed', 'twokey', 'system', '', 'ready', 'approval_ttl', 'pending')
  return reply('LAPSED')
end
if r.escalated ~= '1' and num(r, 'escalate_at') > 0 and now >= num(r, 'escalate_at') then
  set(r, 'escalated', 1)
  if num(r, 'approvals_needed') > 0 and (r.escalate_to or '') ~= '' then
    index_who(r, rid, r.escalate_to)  -- the escalation role may decide it now: `list` shows it
  end
  reindex(r, rid)
  append_event(r, rid, now, 'escalated', 'twokey', 'system', '', r.state, 'escalate_after', r.state)
  return reply('ESCALATE')
end
if r.state == 'pending' and r.reminded ~= '1' and num(r, 'remind_at') > 0
    and now >= num(r, 'remind_at') then
  set(r, 'reminded', 1)
  reindex(r, rid)
  append_event(r, rid, now, 'reminded', 'twokey', 'system', '', r.state, 'remind_after', r.state)
  return reply('REMIND')
end
if r.state == 'ready' and now >= num(r, 'ready_at') + num(r, 'claim_grace_ms') then
  reindex(r, rid)
  return reply('CLAIMABLE')
end
reindex(r, rid)
return reply('NOTHING')
