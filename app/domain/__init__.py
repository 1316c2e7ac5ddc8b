"""The pure heart of twokey: models, states, policy evaluation, separation of duties.

Nothing here performs I/O or reads a clock; time is always passed in (milliseconds since the
epoch, as read from Redis ``TIME``), so every rule can be tested exactly.
"""
