"""Signals services report (error rates, latency, in-flight), aggregated in memory per
service, and the anomalies found in them."""
