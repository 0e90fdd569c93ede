"""Prometheus metrics: the scrape endpoint and what a replica exports on it.

``endpoint`` serves a registry over HTTP on the event loop; ``replica`` gathers, at
each scrape, what the capabilities count and hold. The per-RPC series are the
transport's (``transport.rpc_metrics``).
"""
