-- Give a ticket back that a request which did not open held (tickets.one_request_per_ticket).
-- KEYS[1] the ticket's use key; ARGV[1] the request id that held it.
-- Only the holder's own mark is removed: another request's use of the ticket stays.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
