"""Wire one replica together and run it until SIGTERM/SIGINT.

Start: embedded etcd (if no endpoints) → store (cache loaded) → gRPC server
bound → replica registered and campaigning → health SERVING.
Stop: health NOT_SERVING → resign leadership → drain in-flight RPCs for at
most ``shutdown_grace`` → close the store → stop the embedded etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from bulwark.v1 import cluster_pb2
from bulwark_server import __version__, timestamps
from bulwark_server.alerts.delivery import Notifier, check_url
from bulwark_server.alerts.leader import AlertLeader
from bulwark_server.alerts.manager import AlertCenter
from bulwark_server.alerts.sources import Sources
from bulwark_server.api.alert import AlertServicer
from bulwark_server.api.auth import AuditServicer, AuthServicer
from bulwark_server.api.backpressure import BackpressureServicer
from bulwark_server.api.backups import KeyBackupServicer, RecoveryServicer
from bulwark_server.api.breaker import BreakerServicer
from bulwark_server.api.bulkhead import BulkheadServicer
from bulwark_server.api.chaos import ChaosServicer
from bulwark_server.api.cluster import ClusterServicer
from bulwark_server.api.counter_client import CounterClient
from bulwark_server.api.counters import CounterServicer
from bulwark_server.api.envoy_ratelimit import EnvoyRateLimitServicer, ResponseHeaders
from bulwark_server.api.feature import FeatureServicer
from bulwark_server.api.forwarding import LeaderForwarder
from bulwark_server.api.keda import ExternalScalerServicer
from bulwark_server.api.ratelimit import RateLimitServicer
from bulwark_server.api.registry import RegistryServicer
from bulwark_server.api.remediation import RemediationServicer
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.backpressure.manager import BackpressureManager
from bulwark_server.backups.keys import KeyBackupManager
from bulwark_server.backups.snapshots import RecoveryManager
from bulwark_server.breakers.manager import BreakerManager
from bulwark_server.bulkheads import BulkheadManager
from bulwark_server.chaos_setup import make_chaos
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.cluster.manager import ClusterManager
from bulwark_server.cluster.peers import Peers
from bulwark_server.config import Settings, split_host_port
from bulwark_server.errors import BulwarkError
from bulwark_server.features.manager import FeatureManager
from bulwark_server.limits_file import load_limits_file
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.metrics.replica import ReplicaMetrics, shedding
from bulwark_server.observability import Telemetry, setup_telemetry
from bulwark_server.ratelimits.manager import RateLimitManager
from bulwark_server.ratelimits.sharding import assign
from bulwark_server.recovery_setup import backup_dirs, key_ring
from bulwark_server.registry.manager import RegistryManager
from bulwark_server.remediation.conditions import Conditions
from bulwark_server.remediation.engine import RemediationEngine
from bulwark_server.remediation.manager import RemediationManager
from bulwark_server.remediation.scaling import ScalingManager
from bulwark_server.remediation_setup import FleetHands, FleetView
from bulwark_server.security.audit import AuditLog
from bulwark_server.security.identity import REPLICA_TOKEN_CREATOR
from bulwark_server.security.roles import Role
from bulwark_server.security.tls import etcd_tls
from bulwark_server.security.tokens import TokenStore
from bulwark_server.signals.manager import SignalsManager
from bulwark_server.store import EtcdStore
from bulwark_server.transport.access import AccessInterceptor
from bulwark_server.transport.rpc_metrics import RpcMetrics
from bulwark_server.transport.server import ServiceBinding, build_server, capabilities
from bulwark_server.transport.shedding import LoadShedder
from bulwark_server.transport.telemetry import TelemetryInterceptor
from bulwark_server.transport.tls import peer_credentials

log = logging.getLogger(__name__)

# A replica's own token lives on a lease it renews: a crashed replica's token ends with
# the lease, and (being leased) it is left out of snapshots and of a restore's wipe.
REPLICA_TOKEN_LEASE_S = 600
REPLICA_TOKEN_CHECK_S = 5.0


class Replica:
    """One Bulwark server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self._draining = False
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._limiter: RateLimitManager | None = None
        self._metrics = ReplicaMetrics() if settings.metrics_listen else None
        self._replica_token: str | None = None
        self._replica_lease = 0
        self._replica_token_id = ""

    def request_stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        settings = self.settings
        etcd: EtcdMember | None = None
        endpoints = list(settings.etcd_endpoints)
        if settings.embedded_etcd:
            etcd = EtcdMember("bulwark", settings.data_dir.resolve() / "etcd")
            # Started from the main thread: the child's parent-death signal is tied
            # to the thread that forks it, and a pool thread may exit at any time.
            etcd.start()
            try:
                await asyncio.to_thread(etcd.wait_healthy, 30.0)
            except RuntimeError:
                etcd.stop()
                raise
            endpoints = [etcd.endpoint]
            log.info(
                "embedded etcd started on %s with data in %s",
                etcd.endpoint,
                etcd.data_dir,
                extra={"event": "etcd.embedded", "endpoint": etcd.endpoint},
            )
        telemetry = setup_telemetry(settings)
        store = EtcdStore(endpoints, timeout=settings.etcd_timeout, tls=etcd_tls(settings))
        try:
            if await _unless(self.stopping, store.start()):
                await self._serve(store, telemetry)
            else:
                log.info("stopped before etcd answered", extra={"event": "stopped"})
        finally:
            await store.close()
            telemetry.shutdown()
            if etcd is not None:
                await asyncio.to_thread(etcd.stop)
                log.info("embedded etcd stopped", extra={"event": "etcd.stopped"})

    async def _serve(self, store: EtcdStore, telemetry: Telemetry) -> None:
        settings = self.settings
        replica = cluster_pb2.Replica(
            id=settings.replica_id,
            version=__version__,
            started_at=timestamps.at(time.time()),
            counter_owner=True,
        )
        election = Election(store, replica, ttl=settings.lease_ttl)
        tokens = TokenStore(store)
        audit = AuditLog(
            store,
            election,
            replica.id,
            retention=settings.audit_retention_days * 86400,
            max_events=settings.audit_max_events,
        )
        audit.start()
        self._closers.append(audit.close)
        await self._announce_security(tokens)
        shedder = LoadShedder(settings.max_in_flight)
        rpcs = RpcMetrics()
        counted = [] if self._metrics is None else [rpcs]
        bindings = [*self._bindings(store, election), *self._security_bindings(tokens, audit)]
        built = build_server(
            settings,
            bindings,
            [
                TelemetryInterceptor(telemetry, capabilities(bindings)),
                *counted,
                # Refuse strangers before counting: they must not take the slots of callers.
                AccessInterceptor(tokens, audit, enabled=settings.auth_enabled),
                shedder,
            ],
        )
        if self._metrics is not None:
            self._metrics.add(rpcs.collect)
            self._metrics.add(shedding(shedder.shed))
            self._closers.append(await self._metrics.serve(settings.metrics_listen))
        host, listen_port = split_host_port(settings.listen, "listen")
        if listen_port == 0:
            # Bound to a free port: advertise the port actually bound.
            adv_host, _ = split_host_port(settings.advertise_address, "advertise_address")
            settings = dataclasses.replace(settings, advertise_address=f"{adv_host}:{built.port}")
        replica.address = settings.advertise_address
        await built.server.start()
        try:
            await election.start()
            if self._limiter is not None:
                await load_limits_file(self._limiter, self.settings.limits_file)
            # What is made by now (modules, the cache as loaded, the limits' index)
            # lives as long as the replica: frozen, no full collection visits it again.
            gc.freeze()
            await built.set_serving(True)
            log.info(
                "serving on %s:%d as replica %s",
                host,
                built.port,
                replica.id,
                extra={"event": "serving", "port": built.port, "address": replica.address},
            )
            await self.stopping.wait()
        finally:
            began = time.monotonic()
            self._draining = True
            await built.set_serving(False)
            # The counters are saved while leadership and the slots move on.
            await asyncio.gather(self._hand_over(), election.stop(resign=True))
            log.info(
                "draining for up to %.1fs",
                settings.shutdown_grace,
                extra={"event": "draining", "resign_ms": round((time.monotonic() - began) * 1000)},
            )
            await built.server.stop(settings.shutdown_grace)
            for close in self._closers:
                await close()
            log.info("stopped", extra={"event": "stopped"})

    async def _hand_over(self) -> None:
        if self._limiter is not None:
            await self._limiter.hand_over()

    async def _announce_security(self, tokens: TokenStore) -> None:
        """Log how callers are admitted; with authentication on, make this replica's token."""
        settings = self.settings
        if not settings.tls:
            log.warning(
                "serving PLAINTEXT on %s%s: set tls_cert and tls_key for TLS",
                settings.listen,
                " (loopback only)" if settings.loopback else "",
                extra={"event": "security.plaintext", "loopback": settings.loopback},
            )
        if not settings.auth_enabled:
            log.warning(
                "authentication is OFF: every caller on %s acts as admin",
                settings.listen,
                extra={"event": "security.auth_off"},
            )
            return
        # Forwarded calls reach the leader as this replica, with a token of its own.
        await self._make_replica_token(tokens)
        task = asyncio.get_running_loop().create_task(self._keep_replica_token(tokens))

        async def end() -> None:
            await _cancel(task)
            with contextlib.suppress(BulwarkError):
                await tokens.store.revoke_lease(self._replica_lease)

        self._closers.append(end)
        log.info(
            "authentication on: %s",
            "client certificates (required) and bearer tokens"
            if settings.tls_client_ca
            else "bearer tokens",
            extra={"event": "security.auth_on", "tls": settings.tls},
        )

    async def _make_replica_token(self, tokens: TokenStore) -> None:
        store = tokens.store
        lease = await store.grant_lease(REPLICA_TOKEN_LEASE_S)
        self._replica_token, record = await tokens.create(
            f"replica-{self.settings.replica_id}",
            Role.DATAPLANE,
            REPLICA_TOKEN_CREATOR,
            lease=lease,
        )
        self._replica_lease = lease
        self._replica_token_id = record.id

    async def _keep_replica_token(self, tokens: TokenStore) -> None:
        """Renew the token's lease; make a new token if it was revoked or its lease lost."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(REPLICA_TOKEN_CHECK_S)
            try:
                gone = tokens.store.get("tokens", self._replica_token_id) is None
                if not gone and time.monotonic() - renewed >= REPLICA_TOKEN_LEASE_S / 4:
                    gone = await tokens.store.keep_alive(self._replica_lease) <= 0
                    renewed = time.monotonic()
                if gone:
                    with contextlib.suppress(BulwarkError):
                        await tokens.store.revoke_lease(self._replica_lease)
                    await self._make_replica_token(tokens)
                    renewed = time.monotonic()
            except BulwarkError as exc:
                log.warning("cannot renew this replica's token: %s", exc)

    def _security_bindings(self, tokens: TokenStore, audit: AuditLog) -> list[ServiceBinding]:
        return [
            ServiceBinding.of(AuthServicer(tokens), "security"),
            ServiceBinding.of(AuditServicer(audit), "security"),
        ]

    def _bindings(self, store: EtcdStore, election: Election) -> list[ServiceBinding]:
        """Every bulwark.v1 capability service this replica serves."""
        forwarder = LeaderForwarder(
            store,
            election.replica.id,
            self.settings.etcd_timeout,
            credentials=peer_credentials(self.settings),
            token=lambda: self._replica_token,
        )
        self._closers.append(forwarder.close)
        router = LeaderRouter(election, forwarder)
        breakers = BreakerManager(store, election)
        self._closers.append(breakers.stop)
        bulkheads = BulkheadManager(store)
        self._closers.append(bulkheads.close)
        peers = Peers(store, election, assign)
        counters = CounterClient(
            election.replica.id,
            credentials=peer_credentials(self.settings),
            token=lambda: self._replica_token,
        )
        self._closers.append(counters.close)
        limiter = RateLimitManager(
            store, election, peers, counters, max_request_bytes=self.settings.etcd_max_request_bytes
        )
        limiter.start()
        self._closers.append(limiter.stop)
        self._limiter = limiter
        registry = RegistryManager(store, election)
        self._closers.append(registry.stop)
        features = FeatureManager(store, election, breakers)
        self._closers.append(features.stop)
        ring = key_ring(self.settings)
        dirs = backup_dirs(self.settings)
        keys = KeyBackupManager(store, ring, dirs)
        recovery = RecoveryManager(
            store,
            election,
            ring,
            dirs,
            interval=self.settings.snapshot_interval,
            retention=self.settings.snapshot_retention,
        )
        self._closers.append(recovery.stop)
        signals = SignalsManager(registry)
        scaling = ScalingManager(
            registry.serving, lambda service: signals.signals(service, 60.0).inbound
        )
        alerts = AlertCenter(store, election)
        notifier = Notifier()
        leading = LeaderTask(
            election,
            AlertLeader(
                alerts,
                store,
                notifier,
                Sources(alerts, breakers, features, registry, recovery),
                alertmanager_urls=self.settings.alertmanager_urls,
            ).run,
            "alerts-leader",
        )
        self._closers.append(leading.stop)
        remediation = RemediationManager(store, election, check_url)
        healing = LeaderTask(
            election,
            RemediationEngine(
                remediation,
                Conditions(FleetView(registry, breakers, signals)),
                FleetHands(registry, breakers, features, alerts, notifier),
            ).run,
            "remediation-leader",
        )
        self._closers.append(healing.stop)
        chaos, experimenting = make_chaos(
            store,
            election,
            breakers,
            features,
            signals,
            registry,
            alerts,
            lambda: election.replica.address,
            lambda: self._replica_token,
        )
        self._closers.append(experimenting.stop)
        if self._metrics is not None:
            self._metrics.watch(
                store,
                election,
                limiter=limiter,
                breakers=breakers,
                registry=registry,
                bulkheads=bulkheads,
                features=features,
                keys=keys,
                recovery=recovery,
                signals=signals,
                remediations=remediation,
                chaos=chaos,
            )
        return [
            ServiceBinding.of(AlertServicer(alerts), "alerts"),
            ServiceBinding.of(BackpressureServicer(BackpressureManager(store)), "backpressure"),
            ServiceBinding.of(
                ClusterServicer(
                    ClusterManager(
                        store, election, draining=lambda: self._draining, alerts=alerts.summary
                    )
                ),
                "cluster",
            ),
            ServiceBinding.of(BreakerServicer(breakers, router), "breakers"),
            ServiceBinding.of(ChaosServicer(chaos, router), "chaos"),
            ServiceBinding.of(BulkheadServicer(bulkheads), "bulkheads"),
            ServiceBinding.of(RateLimitServicer(limiter, router), "ratelimits"),
            ServiceBinding.of(CounterServicer(limiter), "ratelimits"),
            ServiceBinding.of(RegistryServicer(registry, signals, router), "registry"),
            ServiceBinding.of(RemediationServicer(remediation, scaling, router), "remediation"),
            ServiceBinding.of(ExternalScalerServicer(scaling, router), "remediation"),
            ServiceBinding.of(FeatureServicer(features), "features"),
            ServiceBinding.of(KeyBackupServicer(keys), "backups"),
            ServiceBinding.of(RecoveryServicer(recovery), "recovery"),
            ServiceBinding.of(
                EnvoyRateLimitServicer(limiter, router, headers=_envoy_headers(self.settings)),
                "ratelimits",
            ),
        ]


async def _unless(stopping: asyncio.Event, step: Awaitable[None]) -> bool:
    """Run ``step`` unless ``stopping`` is set first (then cancel it); whether it ran.
    A replica waiting for etcd at start must still stop when asked."""
    task, stop = asyncio.ensure_future(step), asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            await _cancel(task)
    return not task.cancelled() and task.result() is None


async def _cancel(task: asyncio.Future[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(settings: Settings) -> None:
    """Run a replica until SIGTERM or SIGINT."""
    replica = Replica(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, replica.request_stop)
    await replica.run()


def _envoy_headers(settings: Settings) -> ResponseHeaders | None:
    """The rate-limit response headers ShouldRateLimit adds, if the setting turns them on."""
    if not settings.limit_response_headers_enabled:
        return None
    return ResponseHeaders(
        settings.limit_limit_header, settings.limit_remaining_header, settings.limit_reset_header
    )
