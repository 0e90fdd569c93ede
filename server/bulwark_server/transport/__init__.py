"""The gRPC transport in front of the servicers: the server, TLS, and the interceptors
(telemetry, authentication and audit, load shedding). The only server code outside
``api/`` and the store that speaks gRPC."""
