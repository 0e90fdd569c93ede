"""Fault rules that client libraries apply, and experiments the leader runs and stops."""
