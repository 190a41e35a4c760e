"""Message registry: `@message("x_request")` on a frozen dataclass makes it a wire message."""

from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import ConfigDict, Field, Strict, TypeAdapter

__all__ = [
    "Bool",
    "Bytes",
    "Float",
    "Int",
    "Str",
    "body_adapter",
    "message",
    "message_class",
    "message_types",
    "nested",
]

_REGISTRY: dict[str, type] = {}


# Field types for message bodies: values are taken as they are, never coerced
# ("12" is not an int, 1 is not a bool).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # an int is a fine float
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Bytes = Annotated[bytes, Strict()]
T = TypeVar("T")

# Bodies must match their dataclass exactly: an unknown field is an error, not ignored.
_STRICT_FIELDS = ConfigDict(extra="forbid")


def message(msg_type: str) -> Callable[[type[T]], type[T]]:
    def register(cls: type[T]) -> type[T]:
        if msg_type in _REGISTRY:
            raise ValueError(f"message type {msg_type!r} registered twice")
        cls.msg_type = msg_type  # type: ignore[attr-defined]
        cls.__pydantic_config__ = _STRICT_FIELDS  # type: ignore[attr-defined]
        _REGISTRY[msg_type] = cls
        return cls

    return register


def nested(cls: type[T]) -> type[T]:
    """Mark a dataclass used inside message bodies as strict too."""
    cls.__pydantic_config__ = _STRICT_FIELDS  # type: ignore[attr-defined]
    return cls


def message_class(msg_type: str) -> type | None:
    return _REGISTRY.get(msg_type)


def message_types() -> list[str]:
    return sorted(_REGISTRY)


@cache
def body_adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)
