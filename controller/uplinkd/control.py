"""The control socket's protocol: one JSON object per line each way.

Requests are validated with pydantic (this is an edge, like the config file); a bad
request gets `{"ok": false, "error": "..."}` naming the field, and changes nothing.

    → {"command": "status"}
    ← {"ok": true, "result": {...}}
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from uplinkd.config import describe
from uplinkd.config.fields import shown

MAX_REQUEST = 64 * 1024


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Status(_Req):
    command: Literal["status"]


class PlanReq(_Req):
    command: Literal["plan"]


class Drain(_Req):
    command: Literal["drain", "undrain"]
    uplink: str


class Flush(_Req):
    command: Literal["flush"]


class Resume(_Req):
    command: Literal["resume"]


class Reload(_Req):
    command: Literal["reload"]


class Explain(_Req):
    command: Literal["explain"]
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    iif: str | None = None
    mark: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    ipproto: Literal["tcp", "udp", "icmp"] | None = None
    sport: int | None = Field(default=None, ge=1, le=65535)
    dport: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _one_family(self) -> Explain:
        if self.src is not None and self.src.version != self.dst.version:
            raise ValueError("src: not the family of dst; give two IPv4 or two IPv6 addresses")
        return self


AnyRequest = Status | PlanReq | Drain | Flush | Resume | Reload | Explain
_request: TypeAdapter[AnyRequest] = TypeAdapter(Annotated[AnyRequest, Field(discriminator="command")])
COMMANDS = ("status", "plan", "drain", "undrain", "flush", "resume", "reload", "explain")


class BadRequest(Exception):
    pass


def parse_request(line: bytes) -> AnyRequest:
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"not JSON ({e}); send one JSON object per line") from None
    except RecursionError:
        raise BadRequest("nested too deeply; send a flat JSON object per line") from None
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise BadRequest(f"{str(e).split(';')[0]}; no field takes a number that long") from None
    if not isinstance(data, dict):
        raise BadRequest('send a JSON object, e.g. {"command": "status"}')
    if "command" not in data:
        raise BadRequest(f"command: is required; use one of {', '.join(COMMANDS)}")
    if data["command"] not in COMMANDS:
        command = data["command"]
        said = repr(command) if command is None or isinstance(command, bool | float) else shown(command)
        raise BadRequest(f"command: {said} is unknown; use one of {', '.join(COMMANDS)}")
    try:
        return _request.validate_python(data)
    except ValidationError as e:
        raise BadRequest("; ".join(line for line in describe(e) if line)) from None


def reply(ok: bool, result: Any = None, error: str | None = None) -> bytes:
    body: dict[str, Any] = {"ok": ok}
    if ok:
        body["result"] = result
    else:
        body["error"] = error
    return (json.dumps(body, default=str) + "\n").encode()


class ControlError(Exception):
    """The daemon could not be reached, or answered with an error."""


def call(path: Path, request: dict[str, Any], *, timeout: float = 10.0) -> Any:
    """A blocking client call, for the CLI."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as e:
            raise ControlError(f"cannot reach uplinkd at {path} ({e.strerror}); is it running?") from None
        data = b""
        try:
            sock.sendall((json.dumps(request) + "\n").encode())
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"uplinkd at {path} did not answer within {timeout:g} s") from None
        except OSError as e:
            raise ControlError(f"uplinkd at {path} dropped the connection ({e.strerror})") from None
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError(f"uplinkd at {path} sent a malformed answer") from None
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")))
    return answer.get("result")
