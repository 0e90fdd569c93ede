import datetime

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
SCALING_METRIC_UNSPECIFIED: ScalingMetric
SCALING_METRIC_IN_FLIGHT: ScalingMetric
SCALING_METRIC_CPU: ScalingMetric
SCALING_METRIC_CALLS_PER_SECOND: ScalingMetric

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
