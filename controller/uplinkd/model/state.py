"""`KernelState`: everything the controller owns, as desired or as read back from the kernel.

One mapping per kind, key → object; kinds are looked up by their `Kind` (`state[ROUTES]`),
so a new kind needs no field here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from uplinkd.config import Ownership
from uplinkd.model.kinds import KINDS
from uplinkd.model.kinds.base import Kind, kind_of
from uplinkd.model.kinds.io import Snapshot

KeyT = TypeVar("KeyT", bound=Hashable)
ObjT = TypeVar("ObjT", bound=Hashable)

_NONE: Mapping[Any, Any] = MappingProxyType({})


class KernelState:
    """Immutable: a value, compared by what it holds (empty kinds are the same as absent)."""

    __slots__ = ("_by_kind",)
    _by_kind: Mapping[str, Mapping[Any, Any]]

    def __init__(self, objects: Iterable[object] = ()) -> None:
        by_kind: dict[str, dict[Any, Any]] = {}
        for obj in objects:
            kind = kind_of(obj)
            by_kind.setdefault(kind.name, {})[kind.key(obj)] = obj
        object.__setattr__(
            self, "_by_kind", MappingProxyType({n: MappingProxyType(d) for n, d in by_kind.items()})
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("KernelState is immutable")

    def __getitem__(self, kind: Kind[KeyT, ObjT]) -> Mapping[KeyT, ObjT]:
        return self._by_kind.get(kind.name, _NONE)

    def __iter__(self) -> Iterator[Any]:
        """Every object, kind by kind."""
        for objs in self._by_kind.values():
            yield from objs.values()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KernelState):
            return NotImplemented
        return dict(self._by_kind) == dict(other._by_kind)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KernelState({[*self]!r})"

    def replaced(self, kind: Kind[KeyT, ObjT], objects: Iterable[ObjT]) -> KernelState:
        """This state with `kind`'s objects exchanged for `objects`."""
        return KernelState([*(o for o in self if kind_of(o) is not kind), *objects])

    @classmethod
    def read(cls, snapshot: Snapshot, owner: Ownership) -> KernelState:
        """What we own in the kernel, as every kind reads it from one snapshot."""
        return cls(obj for kind in KINDS for obj in kind.read(snapshot, owner))
