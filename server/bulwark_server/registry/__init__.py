"""Service registry: instances, fenced primaries, failover and picking."""
