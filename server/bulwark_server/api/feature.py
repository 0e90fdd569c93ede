"""FeatureService: validate, call the feature manager, map errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from bulwark.v1 import feature_pb2, feature_pb2_grpc
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.errors import InvalidArgument
from bulwark_server.features.manager import FeatureManager
from bulwark_server.security.identity import caller_name
from bulwark_server.store import EtcdStore
from bulwark_server.validation import (
    page_params,
    timestamp_seconds,
    validate_id,
    validate_name,
    validate_watch,
)

MAX_REASON = 1024
MAX_FALLBACK = 256
MAX_DEPENDENCIES = 64
STATUSES = frozenset(feature_pb2.FeatureStatus.values())
KINDS = (feature_pb2.DEPENDENCY_KIND_FEATURE, feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER)


def _status(value: int, field: str, *, required: bool) -> int:
    if value not in STATUSES:
        raise InvalidArgument(field, f"unknown status {value}")
    if value == feature_pb2.FEATURE_STATUS_UNSPECIFIED:
        if required:
            raise InvalidArgument(field, "is required (AVAILABLE, DEGRADED or DISABLED)")
        return feature_pb2.FEATURE_STATUS_AVAILABLE
    return value


def _reason(value: str, field: str) -> str:
    if len(value) > MAX_REASON:
        raise InvalidArgument(field, f"longer than {MAX_REASON} characters")
    return value


def validate_feature(feature: feature_pb2.Feature) -> feature_pb2.Feature:
    """A copy of the feature with defaults applied; InvalidArgument naming the field."""
    validate_name(feature.name, "feature.name")
    out = feature_pb2.Feature()
    out.CopyFrom(feature)
    out.status = _status(feature.status, "feature.status", required=False)
    _reason(feature.reason, "feature.reason")
    if len(feature.fallback) > MAX_FALLBACK or not feature.fallback.isprintable():
        raise InvalidArgument(
            "feature.fallback", f"must be printable and at most {MAX_FALLBACK} characters"
        )
    validate_id(feature.updated_by, "feature.updated_by", required=False)
    if feature.HasField("expires_at"):
        timestamp_seconds(feature.expires_at, "feature.expires_at")
    if len(feature.depends_on) > MAX_DEPENDENCIES:
        raise InvalidArgument("feature.depends_on", f"at most {MAX_DEPENDENCIES} dependencies")
    seen = set()
    for i, dep in enumerate(feature.depends_on):
        if dep.kind not in KINDS:
            raise InvalidArgument(
                f"feature.depends_on[{i}].kind", "must be FEATURE or CIRCUIT_BREAKER"
            )
        validate_name(dep.name, f"feature.depends_on[{i}].name")
        if (dep.kind, dep.name) in seen:
            raise InvalidArgument(f"feature.depends_on[{i}]", f"{dep.name!r} is listed twice")
        seen.add((dep.kind, dep.name))
    return out


class FeatureServicer(feature_pb2_grpc.FeatureServiceServicer):
    """Thin layer over FeatureManager; every RPC works on any replica."""

    def __init__(self, features: FeatureManager, store: EtcdStore) -> None:
        self._features = features
        self._store = store

    @rpc
    async def PutFeature(
        self, request: feature_pb2.PutFeatureRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.PutFeatureResponse:
        feature = validate_feature(request.feature)
        feature.updated_by = caller_name(feature.updated_by)
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        view, created = await self._features.put(feature, request.expected_revision)
        return feature_pb2.PutFeatureResponse(feature=view, created=created)

    @rpc
    async def SetFeatureStatus(
        self, request: feature_pb2.SetFeatureStatusRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.SetFeatureStatusResponse:
        validate_name(request.name)
        status = _status(request.status, "status", required=True)
        _reason(request.reason, "reason")
        updated_by = caller_name(validate_id(request.updated_by, "updated_by", required=False))
        expires_at = None
        if request.HasField("expires_at"):
            timestamp_seconds(request.expires_at, "expires_at")
            expires_at = request.expires_at
        view = await self._features.set_status(
            request.name, status, request.reason, expires_at, updated_by
        )
        return feature_pb2.SetFeatureStatusResponse(feature=view)

    @rpc
    async def GetFeature(
        self, request: feature_pb2.GetFeatureRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.GetFeatureResponse:
        validate_name(request.name)
        return feature_pb2.GetFeatureResponse(
            feature=self._features.view(request.name), stale=self._store.status().stale
        )

    @rpc
    async def ListFeatures(
        self, request: feature_pb2.ListFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.ListFeaturesResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        views, token = self._features.list(size, start_after)
        return feature_pb2.ListFeaturesResponse(features=views, next_page_token=token)

    @rpc_stream
    async def WatchFeatures(
        self, request: feature_pb2.WatchFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[feature_pb2.WatchFeaturesResponse]:
        names = validate_watch(request.start_revision, request.names)
        async for response in self._features.watch(names, request.start_revision):
            yield response
