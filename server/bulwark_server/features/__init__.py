"""Degraded features and their dependency graph."""
