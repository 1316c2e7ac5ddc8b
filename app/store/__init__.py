"""Redis adapters of the ports: every change is one Lua script with its audit event."""
