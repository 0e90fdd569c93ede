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

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_COMPLETED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_ABORTED: _ClassVar[ExperimentState]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_PASSED: _ClassVar[Verdict]
    VERDICT_FAILED: _ClassVar[Verdict]
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_COMPLETED: ExperimentState
EXPERIMENT_STATE_ABORTED: ExperimentState
VERDICT_UNSPECIFIED: Verdict
VERDICT_PASSED: Verdict
VERDICT_FAILED: Verdict

class FaultTarget(_message.Message):
    __slots__ = ("source_service", "source_instance", "downstream", "method", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    source_service: str
    source_instance: str
    downstream: str
    method: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, source_service: _Optional[str] = ..., source_instance: _Optional[str] = ..., downstream: _Optional[str] = ..., method: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DelayRange(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: _duration_pb2.Duration
    max: _duration_pb2.Duration
    def __init__(self, min: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FaultDelay(_message.Message):
    __slots__ = ("fixed", "uniform", "exponential_mean", "percentage", "header_controlled")
    FIXED_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_MEAN_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    HEADER_CONTROLLED_FIELD_NUMBER: _ClassVar[int]
    fixed: _duration_pb2.Duration
    uniform: DelayRange
    exponential_mean: _duration_pb2.Duration
    percentage: float
    header_controlled: bool
    def __init__(self, fixed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., uniform: _Optional[_Union[DelayRange, _Mapping]] = ..., exponential_mean: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., percentage: _Optional[float] = ..., header_controlled: bool = ...) -> None: ...

class FaultAbort(_message.Message):
    __slots__ = ("code", "message", "percentage", "header_controlled")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    HEADER_CONTROLLED_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    percentage: float
    header_controlled: bool
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., percentage: _Optional[float] = ..., header_controlled: bool = ...) -> None: ...

class FaultRule(_message.Message):
    __slots__ = ("name", "target", "delay", "abort", "max_active_faults", "expires_at", "description", "experiment", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: FaultTarget
    delay: FaultDelay
    abort: FaultAbort
    max_active_faults: int
    expires_at: _timestamp_pb2.Timestamp
    description: str
    experiment: str
    revision: int
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[FaultTarget, _Mapping]] = ..., delay: _Optional[_Union[FaultDelay, _Mapping]] = ..., abort: _Optional[_Union[FaultAbort, _Mapping]] = ..., max_active_faults: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., description: _Optional[str] = ..., experiment: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class PutFaultRuleRequest(_message.Message):
    __slots__ = ("rule", "expected_revision")
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    rule: FaultRule
    expected_revision: int
    def __init__(self, rule: _Optional[_Union[FaultRule, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutFaultRuleResponse(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: FaultRule
    def __init__(self, rule: _Optional[_Union[FaultRule, _Mapping]] = ...) -> None: ...

class GetFaultRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFaultRuleResponse(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: FaultRule
    def __init__(self, rule: _Optional[_Union[FaultRule, _Mapping]] = ...) -> None: ...

class ListFaultRulesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFaultRulesResponse(_message.Message):
    __slots__ = ("rules", "next_page_token")
    RULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[FaultRule]
    next_page_token: str
    def __init__(self, rules: _Optional[_Iterable[_Union[FaultRule, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteFaultRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteFaultRuleResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchFaultRulesRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class WatchFaultRulesResponse(_message.Message):
    __slots__ = ("type", "rule", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    rule: FaultRule
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., rule: _Optional[_Union[FaultRule, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class BreakerProbe(_message.Message):
    __slots__ = ("breaker", "state", "not_state")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NOT_STATE_FIELD_NUMBER: _ClassVar[int]
    breaker: str
    state: _breaker_pb2.BreakerState
    not_state: _breaker_pb2.BreakerState
    def __init__(self, breaker: _Optional[str] = ..., state: _Optional[_Union[_breaker_pb2.BreakerState, str]] = ..., not_state: _Optional[_Union[_breaker_pb2.BreakerState, str]] = ...) -> None: ...

class FeatureProbe(_message.Message):
    __slots__ = ("feature", "status", "not_status")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NOT_STATUS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    status: _feature_pb2.FeatureStatus
    not_status: _feature_pb2.FeatureStatus
    def __init__(self, feature: _Optional[str] = ..., status: _Optional[_Union[_feature_pb2.FeatureStatus, str]] = ..., not_status: _Optional[_Union[_feature_pb2.FeatureStatus, str]] = ...) -> None: ...

class ErrorRateProbe(_message.Message):
    __slots__ = ("service", "below", "window")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    BELOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    service: str
    below: float
    window: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., below: _Optional[float] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PrimaryProbe(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class Probe(_message.Message):
    __slots__ = ("name", "breaker", "feature", "error_rate", "primary")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    name: str
    breaker: BreakerProbe
    feature: FeatureProbe
    error_rate: ErrorRateProbe
    primary: PrimaryProbe
    def __init__(self, name: _Optional[str] = ..., breaker: _Optional[_Union[BreakerProbe, _Mapping]] = ..., feature: _Optional[_Union[FeatureProbe, _Mapping]] = ..., error_rate: _Optional[_Union[ErrorRateProbe, _Mapping]] = ..., primary: _Optional[_Union[PrimaryProbe, _Mapping]] = ...) -> None: ...

class Expectation(_message.Message):
    __slots__ = ("probe", "within", "after_end")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_FIELD_NUMBER: _ClassVar[int]
    AFTER_END_FIELD_NUMBER: _ClassVar[int]
    probe: Probe
    within: _duration_pb2.Duration
    after_end: bool
    def __init__(self, probe: _Optional[_Union[Probe, _Mapping]] = ..., within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., after_end: bool = ...) -> None: ...

class ForceBreakerStep(_message.Message):
    __slots__ = ("breaker", "state")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    breaker: str
    state: _breaker_pb2.BreakerState
    def __init__(self, breaker: _Optional[str] = ..., state: _Optional[_Union[_breaker_pb2.BreakerState, str]] = ...) -> None: ...

class DrainStep(_message.Message):
    __slots__ = ("service", "instance_ids", "count")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    count: int
    def __init__(self, service: _Optional[str] = ..., instance_ids: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ...) -> None: ...

class LoadStep(_message.Message):
    __slots__ = ("address", "method", "data", "rate", "concurrency", "timeout", "metadata", "report_as")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPORT_AS_FIELD_NUMBER: _ClassVar[int]
    address: str
    method: str
    data: str
    rate: float
    concurrency: int
    timeout: _duration_pb2.Duration
    metadata: _containers.ScalarMap[str, str]
    report_as: str
    def __init__(self, address: _Optional[str] = ..., method: _Optional[str] = ..., data: _Optional[str] = ..., rate: _Optional[float] = ..., concurrency: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., report_as: _Optional[str] = ...) -> None: ...

class MethodStep(_message.Message):
    __slots__ = ("fault", "switchover", "force_breaker", "drain", "load")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    SWITCHOVER_FIELD_NUMBER: _ClassVar[int]
    FORCE_BREAKER_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    fault: FaultRule
    switchover: str
    force_breaker: ForceBreakerStep
    drain: DrainStep
    load: LoadStep
    def __init__(self, fault: _Optional[_Union[FaultRule, _Mapping]] = ..., switchover: _Optional[str] = ..., force_breaker: _Optional[_Union[ForceBreakerStep, _Mapping]] = ..., drain: _Optional[_Union[DrainStep, _Mapping]] = ..., load: _Optional[_Union[LoadStep, _Mapping]] = ...) -> None: ...

class Rollback(_message.Message):
    __slots__ = ("force_breaker", "set_feature")
    FORCE_BREAKER_FIELD_NUMBER: _ClassVar[int]
    SET_FEATURE_FIELD_NUMBER: _ClassVar[int]
    force_breaker: ForceBreakerStep
    set_feature: SetFeatureRollback
    def __init__(self, force_breaker: _Optional[_Union[ForceBreakerStep, _Mapping]] = ..., set_feature: _Optional[_Union[SetFeatureRollback, _Mapping]] = ...) -> None: ...

class SetFeatureRollback(_message.Message):
    __slots__ = ("feature", "status")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    status: _feature_pb2.FeatureStatus
    def __init__(self, feature: _Optional[str] = ..., status: _Optional[_Union[_feature_pb2.FeatureStatus, str]] = ...) -> None: ...

class BlastRadius(_message.Message):
    __slots__ = ("max_traffic_percentage", "max_instance_percentage")
    MAX_TRAFFIC_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCE_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    max_traffic_percentage: float
    max_instance_percentage: float
    def __init__(self, max_traffic_percentage: _Optional[float] = ..., max_instance_percentage: _Optional[float] = ...) -> None: ...

class ExperimentSpec(_message.Message):
    __slots__ = ("title", "hypothesis", "method", "duration", "expectations", "rollbacks", "blast_radius", "renew_within", "expected_alerts", "check_interval")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESIS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    EXPECTATIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACKS_FIELD_NUMBER: _ClassVar[int]
    BLAST_RADIUS_FIELD_NUMBER: _ClassVar[int]
    RENEW_WITHIN_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ALERTS_FIELD_NUMBER: _ClassVar[int]
    CHECK_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    title: str
    hypothesis: _containers.RepeatedCompositeFieldContainer[Probe]
    method: _containers.RepeatedCompositeFieldContainer[MethodStep]
    duration: _duration_pb2.Duration
    expectations: _containers.RepeatedCompositeFieldContainer[Expectation]
    rollbacks: _containers.RepeatedCompositeFieldContainer[Rollback]
    blast_radius: BlastRadius
    renew_within: _duration_pb2.Duration
    expected_alerts: _containers.RepeatedScalarFieldContainer[str]
    check_interval: _duration_pb2.Duration
    def __init__(self, title: _Optional[str] = ..., hypothesis: _Optional[_Iterable[_Union[Probe, _Mapping]]] = ..., method: _Optional[_Iterable[_Union[MethodStep, _Mapping]]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expectations: _Optional[_Iterable[_Union[Expectation, _Mapping]]] = ..., rollbacks: _Optional[_Iterable[_Union[Rollback, _Mapping]]] = ..., blast_radius: _Optional[_Union[BlastRadius, _Mapping]] = ..., renew_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expected_alerts: _Optional[_Iterable[str]] = ..., check_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("probe", "held", "value")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    probe: str
    held: bool
    value: str
    def __init__(self, probe: _Optional[str] = ..., held: bool = ..., value: _Optional[str] = ...) -> None: ...

class TimelineEntry(_message.Message):
    __slots__ = ("at", "event", "probes")
    AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    event: str
    probes: _containers.RepeatedCompositeFieldContainer[ProbeResult]
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[str] = ..., probes: _Optional[_Iterable[_Union[ProbeResult, _Mapping]]] = ...) -> None: ...

class ExpectationResult(_message.Message):
    __slots__ = ("probe", "met", "met_at", "after_seconds")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    MET_FIELD_NUMBER: _ClassVar[int]
    MET_AT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    probe: str
    met: bool
    met_at: _timestamp_pb2.Timestamp
    after_seconds: float
    def __init__(self, probe: _Optional[str] = ..., met: bool = ..., met_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_seconds: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("id", "spec", "state", "reason", "verdict", "started_by", "started_at", "ends_at", "ended_at", "renewed_at", "fault_rules", "silence_ids", "timeline", "hypothesis", "expectations", "load_reports", "revision", "method_ended_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    STARTED_BY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_FIELD_NUMBER: _ClassVar[int]
    FAULT_RULES_FIELD_NUMBER: _ClassVar[int]
    SILENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESIS_FIELD_NUMBER: _ClassVar[int]
    EXPECTATIONS_FIELD_NUMBER: _ClassVar[int]
    LOAD_REPORTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    METHOD_ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: ExperimentSpec
    state: ExperimentState
    reason: str
    verdict: Verdict
    started_by: str
    started_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    renewed_at: _timestamp_pb2.Timestamp
    fault_rules: _containers.RepeatedScalarFieldContainer[str]
    silence_ids: _containers.RepeatedScalarFieldContainer[str]
    timeline: _containers.RepeatedCompositeFieldContainer[TimelineEntry]
    hypothesis: _containers.RepeatedCompositeFieldContainer[ProbeResult]
    expectations: _containers.RepeatedCompositeFieldContainer[ExpectationResult]
    load_reports: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    method_ended_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., reason: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., started_by: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., renewed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fault_rules: _Optional[_Iterable[str]] = ..., silence_ids: _Optional[_Iterable[str]] = ..., timeline: _Optional[_Iterable[_Union[TimelineEntry, _Mapping]]] = ..., hypothesis: _Optional[_Iterable[_Union[ProbeResult, _Mapping]]] = ..., expectations: _Optional[_Iterable[_Union[ExpectationResult, _Mapping]]] = ..., load_reports: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., method_ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: ExperimentSpec
    def __init__(self, spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ...) -> None: ...

class StartExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StopExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class RenewExperimentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RenewExperimentResponse(_message.Message):
    __slots__ = ("deadline",)
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetChaosHaltedRequest(_message.Message):
    __slots__ = ("halted", "reason")
    HALTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    halted: bool
    reason: str
    def __init__(self, halted: bool = ..., reason: _Optional[str] = ...) -> None: ...

class SetChaosHaltedResponse(_message.Message):
    __slots__ = ("halted",)
    HALTED_FIELD_NUMBER: _ClassVar[int]
    halted: bool
    def __init__(self, halted: bool = ...) -> None: ...

class GetChaosStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetChaosStatusResponse(_message.Message):
    __slots__ = ("halted", "reason", "running", "fault_rules")
    HALTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FAULT_RULES_FIELD_NUMBER: _ClassVar[int]
    halted: bool
    reason: str
    running: _containers.RepeatedScalarFieldContainer[str]
    fault_rules: int
    def __init__(self, halted: bool = ..., reason: _Optional[str] = ..., running: _Optional[_Iterable[str]] = ..., fault_rules: _Optional[int] = ...) -> None: ...
