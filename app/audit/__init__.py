"""The tamper-evident audit trail: per-shard HMAC chains, sealed after the fact (see chain.py)."""

from app.audit.chain import Problem, ProblemKind, ShardVerdict, VerifyReport, render_verify
from app.audit.trail import AuditTrail

__all__ = ["AuditTrail", "Problem", "ProblemKind", "ShardVerdict", "VerifyReport", "render_verify"]
