from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ChargeRequest(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents", "method")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    amount_cents: int
    method: str
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., method: _Optional[str] = ...) -> None: ...

class ChargeResponse(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...
