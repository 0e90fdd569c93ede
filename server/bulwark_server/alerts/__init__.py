"""Alerts Bulwark raises itself: routes, silences, escalation and their delivery."""
