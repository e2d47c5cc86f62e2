"""Value classes without `dataclasses`: that module loads `inspect` (and with it `ast` and
`dis`) and compiles generated source for each class, which together cost `run` about 14 ms of
a start that the peer waits for at every launch. A `@record` class takes its fields from its
annotations, as a frozen dataclass does (init, eq, hash, repr); mypy reads it as one (PEP 681)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")
_MISSING: Any = object()

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[T], T]:
        return lambda decorated: decorated


class Field:
    """A field's default (or the factory that makes one) and whether repr shows its value."""

    __slots__ = ("default", "factory", "shown")

    def __init__(self, default: Any, factory: Callable[[], Any] | None, shown: bool) -> None:
        self.default = default
        self.factory = factory
        self.shown = shown


def field(
    *, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None, repr: bool = True
) -> Any:
    """A field with a factory for mutable defaults, or kept out of repr (key material)."""
    return Field(default, default_factory, repr)


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def record(cls: type[T]) -> type[T]:
    """An immutable value class."""
    return _build(cls, frozen=True)


@dataclass_transform(field_specifiers=(field, Field))
def mutable_record(cls: type[T]) -> type[T]:
    """A value class whose fields may be assigned after it is made."""
    return _build(cls, frozen=False)


def fields(value: Any) -> tuple[str, ...]:
    """The names of a record's fields, in their order."""
    return tuple(_specs(value))


def as_dict(value: Any) -> dict[str, Any]:
    """A record's fields and their values (not converted further)."""
    return {name: getattr(value, name) for name in _specs(value)}


def replace(value: T, **changes: Any) -> T:
    """A copy of a record with some fields changed."""
    return type(value)(**{**as_dict(value), **changes})


def _specs(value: Any) -> dict[str, Field]:
    specs: dict[str, Field] = value.__record_fields__
    return specs


def _build(cls: type[T], frozen: bool) -> type[T]:
    klass: Any = cls
    specs: dict[str, Field] = {}
    # The class's own annotations (as strings): not `inspect`'s, to stay off its import.
    for name in vars(klass).get("__annotations__", {}):
        declared = vars(klass).get(name, _MISSING)
        if isinstance(declared, Field):
            specs[name] = declared
            if declared.default is _MISSING:
                delattr(klass, name)
            else:
                setattr(klass, name, declared.default)
        else:
            specs[name] = Field(declared, None, True)
    klass.__record_fields__ = specs
    klass.__init__ = _init
    klass.__repr__ = _repr
    klass.__eq__ = _eq
    klass.__hash__ = _hash if frozen else None
    if frozen:
        klass.__setattr__ = _refuse
        klass.__delattr__ = _refuse
    return cls


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    specs = _specs(self)
    kind = type(self).__name__
    if len(args) > len(specs):
        raise TypeError(f"{kind} takes {len(specs)} arguments, {len(args)} given")
    values = dict(zip(specs, args, strict=False))
    for name, value in kwargs.items():
        if name not in specs or name in values:
            raise TypeError(f"{kind} got an unexpected or repeated argument {name!r}")
        values[name] = value
    for name, spec in specs.items():
        if name in values:
            value = values[name]
        elif spec.factory is not None:
            value = spec.factory()
        elif spec.default is not _MISSING:
            value = spec.default
        else:
            raise TypeError(f"{kind} is missing argument {name!r}")
        object.__setattr__(self, name, value)


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in _specs(self))


def _eq(self: Any, other: Any) -> Any:
    if type(other) is not type(self):
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _repr(self: Any) -> str:
    shown = (f"{name}={getattr(self, name)!r}" for name, spec in _specs(self).items() if spec.shown)
    return f"{type(self).__qualname__}({', '.join(shown)})"


def _refuse(self: Any, name: str, *_: Any) -> None:
    raise AttributeError(f"cannot change field {name!r} of {type(self).__name__}: it is frozen")
