"""Bulwark server: the resilience control plane on etcd."""

from bulwark import __version__

__all__ = ["__version__"]
