import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LatencyHistogram(_message.Message):
    __slots__ = ("offset", "counts")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    offset: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, offset: _Optional[int] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class SignalCounts(_message.Message):
    __slots__ = ("calls", "errors", "latency")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    calls: int
    errors: int
    latency: LatencyHistogram
    def __init__(self, calls: _Optional[int] = ..., errors: _Optional[int] = ..., latency: _Optional[_Union[LatencyHistogram, _Mapping]] = ...) -> None: ...

class SignalReport(_message.Message):
    __slots__ = ("service", "counts")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    counts: SignalCounts
    def __init__(self, service: _Optional[str] = ..., counts: _Optional[_Union[SignalCounts, _Mapping]] = ...) -> None: ...

class Signals(_message.Message):
    __slots__ = ("calls", "errors", "calls_per_second", "error_rate", "latency_p50", "latency_p90", "latency_p99")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P90_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_FIELD_NUMBER: _ClassVar[int]
    calls: int
    errors: int
    calls_per_second: float
    error_rate: float
    latency_p50: _duration_pb2.Duration
    latency_p90: _duration_pb2.Duration
    latency_p99: _duration_pb2.Duration
    def __init__(self, calls: _Optional[int] = ..., errors: _Optional[int] = ..., calls_per_second: _Optional[float] = ..., error_rate: _Optional[float] = ..., latency_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p90: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ServiceSignals(_message.Message):
    __slots__ = ("service", "window", "inbound", "by_caller", "downstream", "in_flight", "serving_instances", "at")
    class ByCallerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Signals
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Signals, _Mapping]] = ...) -> None: ...
    class DownstreamEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Signals
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Signals, _Mapping]] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    BY_CALLER_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    SERVING_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    service: str
    window: _duration_pb2.Duration
    inbound: Signals
    by_caller: _containers.MessageMap[str, Signals]
    downstream: _containers.MessageMap[str, Signals]
    in_flight: int
    serving_instances: int
    at: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., inbound: _Optional[_Union[Signals, _Mapping]] = ..., by_caller: _Optional[_Mapping[str, Signals]] = ..., downstream: _Optional[_Mapping[str, Signals]] = ..., in_flight: _Optional[int] = ..., serving_instances: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportSignalsRequest(_message.Message):
    __slots__ = ("reporter", "reports")
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reporter: str
    reports: _containers.RepeatedCompositeFieldContainer[SignalReport]
    def __init__(self, reporter: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[SignalReport, _Mapping]]] = ...) -> None: ...

class ReportSignalsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class GetServiceSignalsRequest(_message.Message):
    __slots__ = ("service", "window")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    service: str
    window: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetServiceSignalsResponse(_message.Message):
    __slots__ = ("signals",)
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    signals: ServiceSignals
    def __init__(self, signals: _Optional[_Union[ServiceSignals, _Mapping]] = ...) -> None: ...

class WatchServiceSignalsRequest(_message.Message):
    __slots__ = ("services", "window", "interval")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    window: _duration_pb2.Duration
    interval: _duration_pb2.Duration
    def __init__(self, services: _Optional[_Iterable[str]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchServiceSignalsResponse(_message.Message):
    __slots__ = ("signals",)
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    signals: ServiceSignals
    def __init__(self, signals: _Optional[_Union[ServiceSignals, _Mapping]] = ...) -> None: ...
