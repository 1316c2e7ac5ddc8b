"""Connectors: one module per identity provider or NHI system, behind the IdentityProvider port."""
