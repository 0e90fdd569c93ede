"""Bulwark client library.

The generated gRPC stubs live in :mod:`bulwark.v1` and are shared by the
client and the server.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
