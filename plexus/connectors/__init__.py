"""Connectors: small processes at the edge that move events between a system and the mesh."""
