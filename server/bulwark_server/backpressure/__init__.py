"""Per-downstream backpressure policies that client libraries watch and apply."""
