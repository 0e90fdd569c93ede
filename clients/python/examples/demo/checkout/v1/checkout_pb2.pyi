from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckoutStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKOUT_STATUS_UNSPECIFIED: _ClassVar[CheckoutStatus]
    CHECKOUT_STATUS_PAID: _ClassVar[CheckoutStatus]
    CHECKOUT_STATUS_PAYMENT_QUEUED: _ClassVar[CheckoutStatus]
CHECKOUT_STATUS_UNSPECIFIED: CheckoutStatus
CHECKOUT_STATUS_PAID: CheckoutStatus
CHECKOUT_STATUS_PAYMENT_QUEUED: CheckoutStatus

class LineItem(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class CheckoutRequest(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents", "items")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    amount_cents: int
    items: _containers.RepeatedCompositeFieldContainer[LineItem]
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ...) -> None: ...

class CheckoutResponse(_message.Message):
    __slots__ = ("order_id", "status", "path", "message")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    status: CheckoutStatus
    path: str
    message: str
    def __init__(self, order_id: _Optional[str] = ..., status: _Optional[_Union[CheckoutStatus, str]] = ..., path: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
