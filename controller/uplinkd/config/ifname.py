"""Interface names as the kernel takes them, and as nft can quote them.

The kernel (`dev_valid_name`) counts bytes: a name is 1 to 15 bytes (IFNAMSIZ - 1), not `.`
or `..`, without `/`, `:`, NUL or a byte its `isspace` calls space (tab, newline, vertical
tab, form feed, carriage return, space, and 0xA0, which is the second byte of UTF-8 `à`).
It does take `"`, `\\` and control characters, but nft cannot write a `"` inside a quoted
string (the table fails to load), reads a trailing `*` as a wildcard, and escapes are fragile,
so uplinkd refuses all of them. The planner calls `problem` on every interface the kernel
reports and never assigns one it refuses to an uplink (so it never reaches the nft table); the
uplink stays absent and its reason names the interface.

`problem` says what is wrong with a name (None if nothing); `glob_problem` does the same for
`match.name`, a glob that may be longer than a name (a `[...]` class stands for one
character) but must be able to match some name.
"""

from __future__ import annotations

import re

from uplinkd.config.fields import shown

IFNAMSIZ = 16
MAX_BYTES = IFNAMSIZ - 1
# Fifteen one-byte classes like [0-9a-f] fit; a longer glob is a mistake, said before fnmatch runs.
MAX_GLOB_BYTES = 256

_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")
# What the kernel takes but nft cannot quote: the quote itself, backslash, control bytes.
_NFT_UNSAFE = frozenset(b'"\\\x7f') | frozenset(range(0x20))
_FIX = "use 1-15 bytes without '/', ':', '\"', '\\', spaces or control characters"
# The message for what was always refused (kept word for word: users and tests know it).
_PLAIN = "cannot be an interface name; use 1-15 characters without '/' or spaces"


def _encoded(name: str) -> bytes | None:
    try:
        return name.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800"
        return None


def _bad_byte(raw: bytes) -> str | None:
    for byte in raw:
        if byte == 0:
            return "a NUL byte"
        if byte in (ord("/"), ord(":")):
            return repr(chr(byte))
        if byte in _KERNEL_SPACE:
            return "a space" if byte == 0x20 else f"a byte the kernel counts as space ({byte:#04x})"
        if byte in _NFT_UNSAFE:
            return f"{chr(byte)!r}, which nft cannot quote"
    return None


def problem(name: str) -> str | None:
    """Why the kernel or nft cannot take `name` as an interface name, or None."""
    if not name or len(name) > MAX_BYTES or "/" in name or " " in name:
        return f"{shown(name)} {_PLAIN}"
    raw = _encoded(name)
    if raw is None:
        return f"{shown(name)} is not valid Unicode; {_FIX}"
    if name in (".", ".."):
        return f"{shown(name)} cannot be an interface name; {_FIX}"
    if len(raw) > MAX_BYTES:
        return f"{shown(name)} is {len(raw)} bytes, more than the kernel's 15; {_FIX}"
    bad = _bad_byte(raw)
    if bad is not None:
        return f"{shown(name)} contains {bad}; {_FIX}"
    if name.endswith("*"):  # only a kernel name can get here: in the config it is a glob
        return f"{shown(name)} ends in '*', which nft reads as a wildcard; rename the interface"
    return None


def _shortest_match(glob: str) -> int:
    """Bytes in the shortest name `glob` can match (a class or `?` counts one byte)."""
    rest = re.sub(r"\[!?\]?[^\]]*\]", "?", glob)  # fnmatch's classes, each one character
    return sum(len(c.encode()) if c != "?" else 1 for c in rest if c != "*")


def glob_problem(glob: str) -> str | None:
    """Why `glob` (fnmatch syntax) cannot stand for interface names, or None."""
    if not any(c in glob for c in "*?["):
        return problem(glob)
    raw = _encoded(glob)
    if raw is None:
        return f"{shown(glob)} is not valid Unicode; {_FIX}"
    if len(raw) > MAX_GLOB_BYTES:
        return f"{shown(glob)} is {len(raw)} bytes; a glob for interface names needs at most {MAX_GLOB_BYTES}"
    bad = _bad_byte(raw)
    if bad is not None:
        return f"{shown(glob)} contains {bad}; {_FIX}"
    if _shortest_match(glob) > MAX_BYTES:
        return (
            f"{shown(glob)} matches only names longer than the kernel's 15 bytes; "
            "shorten it so it can match an interface"
        )
    return None
