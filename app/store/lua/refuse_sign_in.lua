-- A sign-in through an approver's single-use link that does not count (the identity provider
-- signed in someone else, or its answer did not hold: a bad or forged ID token, another
-- browser): a refused attempt, audited in the request's trail like every refused gate. The
-- request, and the approval still waiting for a sign-in, stay exactly as they were.
-- ARGV: rid, approver, code (WRONG_PERSON|SIGNIN_REFUSED), why (a word twokey chose), via.
local rid, approver, code, why, via = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if code ~= 'WRONG_PERSON' and code ~= 'SIGNIN_REFUSED' then
  return redis.error_reply('ERR refuse_sign_in: unknown refusal')
end
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, approver)
if refused then return refused end
return refuse(r, rid, now, code, why, why, approver, via)
