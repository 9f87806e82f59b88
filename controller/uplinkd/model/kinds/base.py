"""What every kind of kernel object the controller owns says about itself.

A kind (rule, route, nexthop, …) lives in one module of this package, which holds:

- its frozen object, with an identity `key` apart from its attributes (set difference
  finds what to create and delete, `!=` what to replace);
- how an operation on it reads in `ip` syntax (`render`), for the log and `uplinkctl plan`;
- its create and delete `Stage`, which is all `plan.diff` needs to order a plan;
- which other objects it needs (`refs`) and which it stands for (`provides`), so a plan can
  be checked to never reference something that is not there;
- how it is read: a pure function of one `Snapshot` of the kernel's dumps;
- how it is written: a coroutine against the small `Transport` protocol, which `kernel/`
  implements with pyroute2, nft and ctnetlink (both in `io`).

Everything but `write` is pure, and `write` only awaits the transport it is handed, so
this package imports nothing that touches the system (no pyroute2, asyncio, subprocess):
the planner may import it, and so may the fake kernel the unit tests use. Adding a kind is
one module here plus one line in `kinds/__init__.py`; a kind that needs a kernel interface
the transport does not speak yet (generic netlink for WireGuard, say) also adds that
method to `Transport` and `Snapshot` (`io`), and its implementation to `kernel/state.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from uplinkd.config import Ownership
from uplinkd.model.kinds.io import Snapshot, Transport

Verb = Literal["add", "replace", "delete"]
Ref = tuple[str, Hashable]  # a name space and a name in it: ("nhid", 100000202)


class Stage(enum.IntEnum):
    """Where in a plan an operation goes. New things are made before what uses them
    (an interface joins the nft table before a route leads out of it; nexthops before
    their group, the group before its route, the route before the rule that leads to its
    table); old things go after nothing uses them, in reverse; flushes come last."""

    LINKS = 10
    ADDRESSES = 20
    NFT_JOIN = 30
    NEXTHOPS = 40
    GROUPS = 50
    ROUTES = 60
    RULES = 70
    RULES_GONE = 80
    ROUTES_GONE = 90
    GROUPS_GONE = 100
    NEXTHOPS_GONE = 110
    ADDRESSES_GONE = 120
    NFT_LEAVE = 130
    LINKS_GONE = 135
    FLUSH = 140


# A recreation (delete, then create: what cannot change in place) deletes just before its
# kind's creates; within a stage the order is this phase, then the kind's own order.
RECREATE, CHANGE = 0, 1


@dataclass(frozen=True)
class Op:
    """One kernel write."""

    verb: Verb
    obj: Any  # an object of a registered kind

    @property
    def kind(self) -> Kind[Any, Any]:
        return kind_of(self.obj)

    def __str__(self) -> str:
        return self.kind.render(self.verb, self.obj)


# --- the kind itself ---------------------------------------------------------------------------

KeyT = TypeVar("KeyT", bound=Hashable)
ObjT = TypeVar("ObjT", bound=Hashable)  # the object type
Change = tuple[tuple[int, int], Op]  # (stage, phase), op


class Kind(Generic[KeyT, ObjT]):
    """The behaviour of one kind of kernel object. Subclasses set the class attributes and
    override what differs; each module creates one instance, `KIND`."""

    name: ClassVar[str]
    type: ClassVar[type[Any]]
    create_stage: ClassVar[Stage]
    delete_stage: ClassVar[Stage]
    # Created with `add` (never taking over an object at the same key) unless it is ours
    # already; `replace` otherwise.
    exclusive: ClassVar[bool] = False
    # An exclusive add refused with EEXIST means someone else's object holds the key (it is
    # left alone and reported); when False, EEXIST means it is there already (done).
    foreign_keys: ClassVar[bool] = False
    # Objects not wanted are deleted. False: only ever created (links are raised, never lowered).
    prune: ClassVar[bool] = True
    # An action, not state (a conntrack flush): never read back, never held.
    action: ClassVar[bool] = False

    def key(self, obj: ObjT) -> KeyT:
        raise NotImplementedError

    def order(self, obj: ObjT) -> Any:
        """Sort order within a stage (default: the key)."""
        return self.key(obj)

    def render(self, verb: Verb, obj: ObjT) -> str:
        raise NotImplementedError

    def refs(self, obj: ObjT) -> Iterable[Ref]:
        """What must exist while this object does."""
        return ()

    def provides(self, obj: ObjT) -> Iterable[Ref]:
        """What this object is, for others' refs."""
        return ()

    def recreate(self, old: ObjT, new: ObjT) -> bool:
        """True when `old` cannot become `new` in place (delete, then create)."""
        return False

    def create_verb(self, owned: bool) -> Verb:
        return "replace" if owned or not self.exclusive else "add"

    def changes(
        self, have: Mapping[KeyT, ObjT], want: Mapping[KeyT, ObjT], *, recreated: frozenset[Ref]
    ) -> Iterator[Change]:
        """The operations that turn `have` into `want` for this kind, each with its stage.
        `recreated`: what other recreations take down with them (their objects are rewritten)."""
        if not recreated and have == want:
            return
        create = (int(self.create_stage), CHANGE)
        changed = [obj for key, obj in want.items() if have.get(key) != obj]
        if recreated:  # unchanged objects that refer to something recreated are written again
            changed += [
                obj
                for key, obj in want.items()
                if have.get(key) == obj and any(r in recreated for r in self.refs(obj))
            ]
        for obj in sorted(changed, key=self.order):
            old = have.get(self.key(obj))
            if old is not None and old != obj and self.recreate(old, obj):
                yield (int(self.create_stage), RECREATE), Op("delete", old)
                yield create, Op(self.create_verb(owned=False), obj)
            else:
                yield create, Op(self.create_verb(owned=old is not None), obj)
        if self.prune:
            for obj in sorted((have[key] for key in have.keys() - want.keys()), key=self.order):
                yield (int(self.delete_stage), CHANGE), Op("delete", obj)

    def read(self, snapshot: Snapshot, owner: Ownership) -> Iterable[ObjT]:
        """Our objects of this kind in the kernel, as read in `snapshot`."""
        return ()

    async def write(self, io: Transport, verb: Verb, obj: ObjT, owner: Ownership) -> None:
        raise NotImplementedError


def ip_command(obj_text: str, verb: Verb) -> str:
    """`ip [-4|-6] <object> <rest>` with the verb after the object word (`del` for delete)."""
    head, _, rest = obj_text.partition(" ")
    words = rest.split(" ")
    at = 2 if words[0] in ("-4", "-6") else 1
    return " ".join([head, *words[:at], "del" if verb == "delete" else verb, *words[at:]])


# --- the registry ------------------------------------------------------------------------------

_BY_TYPE: dict[type[Any], Kind[Any, Any]] = {}
_BY_NAME: dict[str, Kind[Any, Any]] = {}


def register(*kinds: Kind[Any, Any]) -> tuple[Kind[Any, Any], ...]:
    """Make kinds known, in plan order (ties within a stage follow this order)."""
    for kind in kinds:
        if kind.name in _BY_NAME and _BY_NAME[kind.name] is not kind:
            raise ValueError(f"two kinds are named {kind.name!r}")
        _BY_TYPE[kind.type] = kind
        _BY_NAME[kind.name] = kind
    return tuple(_BY_NAME.values())


def kind_of(obj: object) -> Kind[Any, Any]:
    try:
        return _BY_TYPE[type(obj)]
    except KeyError:
        raise TypeError(f"{type(obj).__name__} is not a registered kind of kernel object") from None


def kind_named(name: str) -> Kind[Any, Any]:
    return _BY_NAME[name]


def registered() -> tuple[Kind[Any, Any], ...]:
    return tuple(_BY_NAME.values())
