"""`twokey report`: evidence for auditors, counted only from audit events whose chain verifies.

source.py streams and verifies each shard; aggregate.py (pure) counts; build.py adds names and
context; controls.py maps sections to frameworks (data); charts.py and render.py draw HTML, PDF
and JSON. Nothing here imports a chat channel: the report reads the trail, the policy and the
directory, never a platform.
"""
