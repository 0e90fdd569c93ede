"""KeyBackupService and RecoveryService: validate, call the managers, map errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from bulwark.v1 import (
    keybackup_pb2,
    keybackup_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
)
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.backups.keys import Caller, KeyBackupManager
from bulwark_server.backups.snapshots import RecoveryManager
from bulwark_server.errors import InvalidArgument
from bulwark_server.security.identity import caller_name
from bulwark_server.validation import page_params, validate_id, validate_name

MAX_MATERIAL = 64 * 1024
MAX_LABELS = 16


def _snapshot_id(value: str) -> str:
    return validate_name(value, "snapshot_id") if value else value


class KeyBackupServicer(keybackup_pb2_grpc.KeyBackupServiceServicer):
    def __init__(self, keys: KeyBackupManager) -> None:
        self._keys = keys

    @rpc
    async def BackupKey(
        self, request: keybackup_pb2.BackupKeyRequest, context: grpc.aio.ServicerContext
    ) -> keybackup_pb2.BackupKeyResponse:
        validate_name(request.key_id, "key_id")
        if not 1 <= len(request.material) <= MAX_MATERIAL:
            raise InvalidArgument("material", f"must be 1 byte to {MAX_MATERIAL} bytes")
        if len(request.labels) > MAX_LABELS:
            raise InvalidArgument("labels", f"at most {MAX_LABELS}")
        for key, value in request.labels.items():
            validate_id(key, "labels key")
            validate_id(value, f"labels[{key!r}]", required=False)
        backup = await self._keys.backup(
            request.key_id, request.material, request.labels, Caller.current()
        )
        return keybackup_pb2.BackupKeyResponse(backup=backup)

    @rpc
    async def RestoreKey(
        self, request: keybackup_pb2.RestoreKeyRequest, context: grpc.aio.ServicerContext
    ) -> keybackup_pb2.RestoreKeyResponse:
        validate_name(request.key_id, "key_id")
        if request.version < 0:
            raise InvalidArgument("version", "must not be negative (0 for the latest)")
        backup, material, location, damaged = await self._keys.restore(
            request.key_id, request.version
        )
        return keybackup_pb2.RestoreKeyResponse(
            backup=backup, material=material, location=location, damaged=damaged
        )

    @rpc
    async def ListKeyBackups(
        self, request: keybackup_pb2.ListKeyBackupsRequest, context: grpc.aio.ServicerContext
    ) -> keybackup_pb2.ListKeyBackupsResponse:
        if request.key_id:
            validate_name(request.key_id, "key_id")
        size, start_after = page_params(request.page_size, request.page_token)
        backups, token = self._keys.list(request.key_id, size, start_after)
        return keybackup_pb2.ListKeyBackupsResponse(backups=backups, next_page_token=token)

    @rpc
    async def VerifyKeyBackups(
        self, request: keybackup_pb2.VerifyKeyBackupsRequest, context: grpc.aio.ServicerContext
    ) -> keybackup_pb2.VerifyKeyBackupsResponse:
        if request.key_id:
            validate_name(request.key_id, "key_id")
        return await self._keys.verify(request.key_id)

    @rpc_stream
    async def RotateKeyEncryptionKey(
        self,
        request: keybackup_pb2.RotateKeyEncryptionKeyRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[keybackup_pb2.RotateKeyEncryptionKeyResponse]:
        if request.kek_id:
            validate_name(request.kek_id, "kek_id")
        async for progress in self._keys.rotate(request.kek_id):
            yield progress


class RecoveryServicer(recovery_pb2_grpc.RecoveryServiceServicer):
    def __init__(self, recovery: RecoveryManager) -> None:
        self._recovery = recovery

    @rpc_stream
    async def CreateSnapshot(
        self, request: recovery_pb2.CreateSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[recovery_pb2.CreateSnapshotResponse]:
        async for progress, snapshot in self._recovery.create(caller_name()):
            response = recovery_pb2.CreateSnapshotResponse(progress=progress)
            if snapshot is not None:
                response.snapshot.CopyFrom(snapshot)
            yield response

    @rpc
    async def ListSnapshots(
        self, request: recovery_pb2.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> recovery_pb2.ListSnapshotsResponse:
        return recovery_pb2.ListSnapshotsResponse(snapshots=await self._recovery.list())

    @rpc_stream
    async def RestoreSnapshot(
        self, request: recovery_pb2.RestoreSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[recovery_pb2.RestoreSnapshotResponse]:
        _snapshot_id(request.snapshot_id)
        async for progress, result in self._recovery.restore(request.snapshot_id, request.wipe):
            response = recovery_pb2.RestoreSnapshotResponse(progress=progress)
            if result is not None:
                response.MergeFrom(result)
            yield response

    @rpc_stream
    async def RunDrill(
        self, request: recovery_pb2.RunDrillRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[recovery_pb2.RunDrillResponse]:
        _snapshot_id(request.snapshot_id)
        async for progress, report in self._recovery.drill(request.snapshot_id):
            response = recovery_pb2.RunDrillResponse(progress=progress)
            if report is not None:
                response.report.CopyFrom(report)
            yield response
