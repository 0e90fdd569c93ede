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
from bulwark_server.validation import (
    page_params,
    timestamp_seconds,
    validate_id,
    validate_name,
    validate_watch,
)


class FeatureServicer(feature_pb2_grpc.FeatureServiceServicer):
    """Thin layer over FeatureManager; every RPC works on any replica."""

    def __init__(self, features: FeatureManager) -> None:
        self._features = features

    @rpc
    async def PutFeature(
        self, request: feature_pb2.PutFeatureRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.PutFeatureResponse:
        # The request's shape here; the definition's rules are the manager's
        # (features.rules.normalize_feature).
        validate_name(request.feature.name, "feature.name")
        claimed = validate_id(request.feature.updated_by, "feature.updated_by", required=False)
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        feature = feature_pb2.Feature()
        feature.CopyFrom(request.feature)
        feature.updated_by = caller_name(claimed)
        view, created = await self._features.put(feature, request.expected_revision)
        return feature_pb2.PutFeatureResponse(feature=view, created=created)

    @rpc
    async def SetFeatureStatus(
        self, request: feature_pb2.SetFeatureStatusRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.SetFeatureStatusResponse:
        validate_name(request.name)
        updated_by = caller_name(validate_id(request.updated_by, "updated_by", required=False))
        expires_at = None
        if request.HasField("expires_at"):
            timestamp_seconds(request.expires_at, "expires_at")
            expires_at = request.expires_at
        view = await self._features.set_status(
            request.name, request.status, request.reason, expires_at, updated_by
        )
        return feature_pb2.SetFeatureStatusResponse(feature=view)

    @rpc
    async def GetFeature(
        self, request: feature_pb2.GetFeatureRequest, context: grpc.aio.ServicerContext
    ) -> feature_pb2.GetFeatureResponse:
        validate_name(request.name)
        return feature_pb2.GetFeatureResponse(
            feature=self._features.view(request.name), stale=self._features.stale
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
