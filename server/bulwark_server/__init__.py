"""Bulwark server: the resilience control plane on etcd."""

# Released in step with bulwark-client, which it requires at this same version.
__version__ = "0.1.0"

__all__ = ["__version__"]
