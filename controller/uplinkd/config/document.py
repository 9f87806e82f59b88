"""The config file as a document: read safely, decoded, and checked before the schema sees it.

Whatever the path names (a directory, a FIFO, /dev/zero, a 1 GB file, binary garbage, text
that is not UTF-8, JSON nested 100,000 deep, an integer of 5,000 digits), `read` either
returns the decoded object or raises `ConfigError` with "<file>: what is wrong; how to fix
it". It never blocks (a FIFO is opened non-blocking and refused), never reads more than
`MAX_BYTES`, and never lets RecursionError or ValueError out: the daemon's reload calls it
and must keep running on any file.

`check` walks a decoded document (from a file or from Python) without recursion and refuses
what the schema should never see: nesting deeper than any config needs, text that is not
valid Unicode (a JSON "\\ud800"), and NUL characters.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from uplinkd.config.errors import ConfigError

# A config with 100 uplinks is ~40 KB; 1 MiB leaves room and bounds the work.
MAX_BYTES = 1 << 20
# The deepest valid config is 5 levels (uplinks.NAME.match.usb.vendor); lists add one.
MAX_DEPTH = 16
# Keys and values in all; 100 uplinks with every setting spelled out are ~5,000.
MAX_VALUES = 50_000


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _read_bytes(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror}); check the path"]) from None
    except ValueError:  # a NUL in the path
        raise ConfigError([f"{path!r}: not a usable path; give the config file's path"]) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError([f"{path}: cannot read (Is a directory); check the path"])
        if not stat.S_ISREG(mode):
            raise ConfigError([f"{path}: is {_kind(mode)}; give a JSON or TOML file"])
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror}); check the path"]) from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise ConfigError(
            [f"{path}: larger than {MAX_BYTES >> 20} MiB; a config is a few KB, check the path"]
        )
    return b"".join(chunks)


def read(path: Path) -> Any:
    """The decoded JSON or TOML document (by extension; JSON otherwise) at `path`."""
    raw = _read_bytes(path)
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text ({e}); save it as UTF-8 JSON or TOML"]) from None
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        data: Any = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError([f"{path}: not valid {kind} ({e})"]) from None
    except RecursionError:
        raise ConfigError(
            [f"{path}: not valid {kind} (nested too deeply); a config needs at most {MAX_DEPTH} levels"]
        ) from None
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ConfigError(
            [f"{path}: not valid {kind} ({str(e).split(';')[0]}); no setting takes a number that long"]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be an object with 'uplinks'"])
    problems = check(data)
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return data


def _text_problem(value: str, what: str) -> str | None:
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{what} that is not valid Unicode (a lone surrogate); fix it"
    if "\0" in value:
        return f"{what} with a NUL character; remove it"
    return None


def check(data: Any) -> list[str]:
    """What in `data` no schema check should have to see; one line per problem (a few at most).

    Iterative, and bounded by `MAX_VALUES`: the daemon's reload runs this on its event loop.
    """
    problems: list[str] = []
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    seen = 0
    while stack and len(problems) < 5:  # enough to act on; a hostile file could hold millions
        where, value = stack.pop()
        seen += 1 + (len(value) if isinstance(value, dict | list | tuple) else 0)
        if seen > MAX_VALUES:
            problems.append(f"more than {MAX_VALUES} values; a config has a few hundred, check the file")
            break
        if isinstance(value, str):
            why = _text_problem(value, "text")
            if why is not None:
                problems.append(f"{'.'.join(where) or 'top level'}: {why}")
            continue
        if not isinstance(value, dict | list | tuple):
            continue
        if len(where) >= MAX_DEPTH:
            problems.append(f"{'.'.join(where)}: nested more than {MAX_DEPTH} levels deep; no setting is")
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                why = _text_problem(key, "a key") if isinstance(key, str) else None
                if why is not None:
                    problems.append(f"{'.'.join(where) or 'top level'}: {why}")
                stack.append(((*where, str(key)), item))
        else:
            stack.extend(((*where, str(i)), item) for i, item in enumerate(value))
    return problems
