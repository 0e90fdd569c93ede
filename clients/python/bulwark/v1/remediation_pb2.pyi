import datetime

from bulwark.v1 import breaker_pb2 as _breaker_pb2
from bulwark.v1 import feature_pb2 as _feature_pb2
from bulwark.v1 import watch_pb2 as _watch_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScalingMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCALING_METRIC_UNSPECIFIED: _ClassVar[ScalingMetric]
    SCALING_METRIC_IN_FLIGHT: _ClassVar[ScalingMetric]
    SCALING_METRIC_CPU: _ClassVar[ScalingMetric]
    SCALING_METRIC_CALLS_PER_SECOND: _ClassVar[ScalingMetric]

class ServiceSignal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_SIGNAL_UNSPECIFIED: _ClassVar[ServiceSignal]
    SERVICE_SIGNAL_ERROR_RATE: _ClassVar[ServiceSignal]
    SERVICE_SIGNAL_LATENCY_P99: _ClassVar[ServiceSignal]
    SERVICE_SIGNAL_IN_FLIGHT: _ClassVar[ServiceSignal]
    SERVICE_SIGNAL_REPLICATION_LAG: _ClassVar[ServiceSignal]

class RemediationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REMEDIATION_STATE_UNSPECIFIED: _ClassVar[RemediationState]
    REMEDIATION_STATE_RUNNING: _ClassVar[RemediationState]
    REMEDIATION_STATE_RESOLVED: _ClassVar[RemediationState]
    REMEDIATION_STATE_ESCALATED: _ClassVar[RemediationState]
    REMEDIATION_STATE_REFUSED: _ClassVar[RemediationState]
    REMEDIATION_STATE_DRY_RUN: _ClassVar[RemediationState]
    REMEDIATION_STATE_STOPPED: _ClassVar[RemediationState]
SCALING_METRIC_UNSPECIFIED: ScalingMetric
SCALING_METRIC_IN_FLIGHT: ScalingMetric
SCALING_METRIC_CPU: ScalingMetric
SCALING_METRIC_CALLS_PER_SECOND: ScalingMetric
SERVICE_SIGNAL_UNSPECIFIED: ServiceSignal
SERVICE_SIGNAL_ERROR_RATE: ServiceSignal
SERVICE_SIGNAL_LATENCY_P99: ServiceSignal
SERVICE_SIGNAL_IN_FLIGHT: ServiceSignal
SERVICE_SIGNAL_REPLICATION_LAG: ServiceSignal
REMEDIATION_STATE_UNSPECIFIED: RemediationState
REMEDIATION_STATE_RUNNING: RemediationState
REMEDIATION_STATE_RESOLVED: RemediationState
REMEDIATION_STATE_ESCALATED: RemediationState
REMEDIATION_STATE_REFUSED: RemediationState
REMEDIATION_STATE_DRY_RUN: RemediationState
REMEDIATION_STATE_STOPPED: RemediationState

class ScalingTarget(_message.Message):
    __slots__ = ("metric", "target")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    metric: ScalingMetric
    target: float
    def __init__(self, metric: _Optional[_Union[ScalingMetric, str]] = ..., target: _Optional[float] = ...) -> None: ...

class ScalingSpec(_message.Message):
    __slots__ = ("targets", "min_replicas", "max_replicas", "tolerance", "scale_down_stabilization", "scale_up_stabilization")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_STABILIZATION_FIELD_NUMBER: _ClassVar[int]
    SCALE_UP_STABILIZATION_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[ScalingTarget]
    min_replicas: int
    max_replicas: int
    tolerance: float
    scale_down_stabilization: _duration_pb2.Duration
    scale_up_stabilization: _duration_pb2.Duration
    def __init__(self, targets: _Optional[_Iterable[_Union[ScalingTarget, _Mapping]]] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., tolerance: _Optional[float] = ..., scale_down_stabilization: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., scale_up_stabilization: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ScalingReading(_message.Message):
    __slots__ = ("metric", "current", "target", "desired_replicas")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    metric: ScalingMetric
    current: float
    target: float
    desired_replicas: int
    def __init__(self, metric: _Optional[_Union[ScalingMetric, str]] = ..., current: _Optional[float] = ..., target: _Optional[float] = ..., desired_replicas: _Optional[int] = ...) -> None: ...

class ScalingRecommendation(_message.Message):
    __slots__ = ("service", "current_replicas", "desired_replicas", "recommended_replicas", "reason", "readings", "at")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    service: str
    current_replicas: int
    desired_replicas: int
    recommended_replicas: int
    reason: str
    readings: _containers.RepeatedCompositeFieldContainer[ScalingReading]
    at: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., current_replicas: _Optional[int] = ..., desired_replicas: _Optional[int] = ..., recommended_replicas: _Optional[int] = ..., reason: _Optional[str] = ..., readings: _Optional[_Iterable[_Union[ScalingReading, _Mapping]]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetScalingRecommendationRequest(_message.Message):
    __slots__ = ("service", "spec")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    service: str
    spec: ScalingSpec
    def __init__(self, service: _Optional[str] = ..., spec: _Optional[_Union[ScalingSpec, _Mapping]] = ...) -> None: ...

class GetScalingRecommendationResponse(_message.Message):
    __slots__ = ("recommendation",)
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    recommendation: ScalingRecommendation
    def __init__(self, recommendation: _Optional[_Union[ScalingRecommendation, _Mapping]] = ...) -> None: ...

class WatchScalingRecommendationsRequest(_message.Message):
    __slots__ = ("service", "spec", "interval")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    service: str
    spec: ScalingSpec
    interval: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., spec: _Optional[_Union[ScalingSpec, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchScalingRecommendationsResponse(_message.Message):
    __slots__ = ("recommendation",)
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    recommendation: ScalingRecommendation
    def __init__(self, recommendation: _Optional[_Union[ScalingRecommendation, _Mapping]] = ...) -> None: ...

class InstanceCondition(_message.Message):
    __slots__ = ("service", "missed_heartbeats", "not_serving")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MISSED_HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    NOT_SERVING_FIELD_NUMBER: _ClassVar[int]
    service: str
    missed_heartbeats: int
    not_serving: bool
    def __init__(self, service: _Optional[str] = ..., missed_heartbeats: _Optional[int] = ..., not_serving: bool = ...) -> None: ...

class BreakerCondition(_message.Message):
    __slots__ = ("breaker", "open_for")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    OPEN_FOR_FIELD_NUMBER: _ClassVar[int]
    breaker: str
    open_for: _duration_pb2.Duration
    def __init__(self, breaker: _Optional[str] = ..., open_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SignalCondition(_message.Message):
    __slots__ = ("service", "signal", "above", "anomalous", "window")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ABOVE_FIELD_NUMBER: _ClassVar[int]
    ANOMALOUS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    service: str
    signal: ServiceSignal
    above: float
    anomalous: bool
    window: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., signal: _Optional[_Union[ServiceSignal, str]] = ..., above: _Optional[float] = ..., anomalous: bool = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PrimaryCondition(_message.Message):
    __slots__ = ("service", "vacant_for")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VACANT_FOR_FIELD_NUMBER: _ClassVar[int]
    service: str
    vacant_for: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., vacant_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("instance", "breaker", "signal", "no_primary")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    NO_PRIMARY_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceCondition
    breaker: BreakerCondition
    signal: SignalCondition
    no_primary: PrimaryCondition
    def __init__(self, instance: _Optional[_Union[InstanceCondition, _Mapping]] = ..., breaker: _Optional[_Union[BreakerCondition, _Mapping]] = ..., signal: _Optional[_Union[SignalCondition, _Mapping]] = ..., no_primary: _Optional[_Union[PrimaryCondition, _Mapping]] = ...) -> None: ...

class DrainAction(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeregisterAction(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailoverAction(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForceBreakerAction(_message.Message):
    __slots__ = ("breaker", "state")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    breaker: str
    state: _breaker_pb2.BreakerState
    def __init__(self, breaker: _Optional[str] = ..., state: _Optional[_Union[_breaker_pb2.BreakerState, str]] = ...) -> None: ...

class SetFeatureAction(_message.Message):
    __slots__ = ("feature", "status")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    status: _feature_pb2.FeatureStatus
    def __init__(self, feature: _Optional[str] = ..., status: _Optional[_Union[_feature_pb2.FeatureStatus, str]] = ...) -> None: ...

class WebhookAction(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class AlertAction(_message.Message):
    __slots__ = ("severity", "summary")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    severity: str
    summary: str
    def __init__(self, severity: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("drain", "deregister", "failover", "force_breaker", "set_feature", "webhook", "alert")
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    DEREGISTER_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    FORCE_BREAKER_FIELD_NUMBER: _ClassVar[int]
    SET_FEATURE_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    drain: DrainAction
    deregister: DeregisterAction
    failover: FailoverAction
    force_breaker: ForceBreakerAction
    set_feature: SetFeatureAction
    webhook: WebhookAction
    alert: AlertAction
    def __init__(self, drain: _Optional[_Union[DrainAction, _Mapping]] = ..., deregister: _Optional[_Union[DeregisterAction, _Mapping]] = ..., failover: _Optional[_Union[FailoverAction, _Mapping]] = ..., force_breaker: _Optional[_Union[ForceBreakerAction, _Mapping]] = ..., set_feature: _Optional[_Union[SetFeatureAction, _Mapping]] = ..., webhook: _Optional[_Union[WebhookAction, _Mapping]] = ..., alert: _Optional[_Union[AlertAction, _Mapping]] = ...) -> None: ...

class PlaybookGuards(_message.Message):
    __slots__ = ("min_healthy_share", "cooldown", "max_actions_per_hour")
    MIN_HEALTHY_SHARE_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIONS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    min_healthy_share: float
    cooldown: _duration_pb2.Duration
    max_actions_per_hour: int
    def __init__(self, min_healthy_share: _Optional[float] = ..., cooldown: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_actions_per_hour: _Optional[int] = ...) -> None: ...

class Playbook(_message.Message):
    __slots__ = ("name", "description", "condition", "actions", "verify_within", "guards", "dry_run", "disabled", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_WITHIN_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    condition: Condition
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    verify_within: _duration_pb2.Duration
    guards: PlaybookGuards
    dry_run: bool
    disabled: bool
    revision: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., condition: _Optional[_Union[Condition, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., verify_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., guards: _Optional[_Union[PlaybookGuards, _Mapping]] = ..., dry_run: bool = ..., disabled: bool = ..., revision: _Optional[int] = ...) -> None: ...

class RemediationStep(_message.Message):
    __slots__ = ("action", "started_at", "done", "outcome", "verification", "epoch_before")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_BEFORE_FIELD_NUMBER: _ClassVar[int]
    action: int
    started_at: _timestamp_pb2.Timestamp
    done: bool
    outcome: str
    verification: str
    epoch_before: int
    def __init__(self, action: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., done: bool = ..., outcome: _Optional[str] = ..., verification: _Optional[str] = ..., epoch_before: _Optional[int] = ...) -> None: ...

class Remediation(_message.Message):
    __slots__ = ("id", "playbook", "target", "state", "steps", "started_at", "ended_at", "reason", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    PLAYBOOK_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    playbook: str
    target: str
    state: RemediationState
    steps: _containers.RepeatedCompositeFieldContainer[RemediationStep]
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    reason: str
    revision: int
    def __init__(self, id: _Optional[str] = ..., playbook: _Optional[str] = ..., target: _Optional[str] = ..., state: _Optional[_Union[RemediationState, str]] = ..., steps: _Optional[_Iterable[_Union[RemediationStep, _Mapping]]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class PutPlaybookRequest(_message.Message):
    __slots__ = ("playbook", "expected_revision")
    PLAYBOOK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    playbook: Playbook
    expected_revision: int
    def __init__(self, playbook: _Optional[_Union[Playbook, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutPlaybookResponse(_message.Message):
    __slots__ = ("playbook",)
    PLAYBOOK_FIELD_NUMBER: _ClassVar[int]
    playbook: Playbook
    def __init__(self, playbook: _Optional[_Union[Playbook, _Mapping]] = ...) -> None: ...

class GetPlaybookRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPlaybookResponse(_message.Message):
    __slots__ = ("playbook",)
    PLAYBOOK_FIELD_NUMBER: _ClassVar[int]
    playbook: Playbook
    def __init__(self, playbook: _Optional[_Union[Playbook, _Mapping]] = ...) -> None: ...

class ListPlaybooksRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPlaybooksResponse(_message.Message):
    __slots__ = ("playbooks", "next_page_token")
    PLAYBOOKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    playbooks: _containers.RepeatedCompositeFieldContainer[Playbook]
    next_page_token: str
    def __init__(self, playbooks: _Optional[_Iterable[_Union[Playbook, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeletePlaybookRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePlaybookResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ListRemediationsRequest(_message.Message):
    __slots__ = ("playbook", "page_size", "page_token")
    PLAYBOOK_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    playbook: str
    page_size: int
    page_token: str
    def __init__(self, playbook: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRemediationsResponse(_message.Message):
    __slots__ = ("remediations", "next_page_token")
    REMEDIATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    remediations: _containers.RepeatedCompositeFieldContainer[Remediation]
    next_page_token: str
    def __init__(self, remediations: _Optional[_Iterable[_Union[Remediation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRemediationsRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class WatchRemediationsResponse(_message.Message):
    __slots__ = ("type", "remediation", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REMEDIATION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    remediation: Remediation
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., remediation: _Optional[_Union[Remediation, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class SetRemediationPausedRequest(_message.Message):
    __slots__ = ("paused", "reason")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    reason: str
    def __init__(self, paused: bool = ..., reason: _Optional[str] = ...) -> None: ...

class SetRemediationPausedResponse(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    def __init__(self, paused: bool = ...) -> None: ...
