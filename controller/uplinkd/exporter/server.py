"""uplinkd-exporter's HTTP side: `/metrics` on one address, the status page on another.

    uplinkd-exporter [--socket PATH] [--listen 127.0.0.1:9477]
                     [--page 192.168.1.1:8080 [--page-host NAME]... [--page-token-file FILE]]

Each listener binds exactly the address it is given, so the page answers on the LAN
address only (a connection to any other address of the router is refused). The page also
answers only requests whose Host header names it: its own ADDRESS:PORT or a `--page-host`
name (421 otherwise), so a web page that rebinds its own DNS name to the router's LAN address
cannot read the page from a LAN browser (DNS rebinding). `--listen ''`
turns the metrics off, no `--page` leaves the page off. The page is read-only unless a
token file is given; then POST `api/drain` and `api/undrain` with `Authorization: Bearer
<token>` act through the control socket, like `uplinkctl drain`.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.process_collector import ProcessCollector

from uplinkd import __version__, control
from uplinkd.config import Config
from uplinkd.exporter.collector import StatusCollector
from uplinkd.exporter.history import History
from uplinkd.exporter.page import HTML, SCRIPT

log = logging.getLogger("uplinkd.exporter")

DEFAULT_LISTEN = "127.0.0.1:9477"
STATUS_TIMEOUT = 3.0
MAX_BODY = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class UsageError(Exception):
    pass


def parse_address(text: str, *, what: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` with a literal address: a name could resolve to more than
    the address meant, and the point is to bind one address only."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise UsageError(
            f"{what}: {text!r} is not ADDRESS:PORT; write e.g. 192.168.1.1:8080 or [::1]:9477"
        ) from None
    if not sep or not 0 < number < 65536:
        raise UsageError(f"{what}: {text!r} needs a port from 1 to 65535, e.g. 127.0.0.1:9477")
    return host, number


# A host name of RFC 1123 labels (lower case, no trailing dot: host_key strips it).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")

HostKey = tuple[str, int | None]


def host_key(value: str) -> HostKey | None:
    """A Host header (or `--page-host` value) as (host, port or None): lower case, no trailing
    dot, an IP literal in its canonical form; None when it is not a host[:port] at all."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:
        return None  # an IPv6 literal without brackets is not a Host header
    else:
        host, colon, port_text_or_empty = value.partition(":")
        port_text = port_text_or_empty if colon else None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    host = host.removesuffix(".")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if len(host) > 253 or not _HOST_NAME.fullmatch(host):
            return None
    return host, port


def page_hosts(address: tuple[str, int], names: list[str]) -> frozenset[HostKey]:
    """The Host headers the page answers: its ADDRESS:PORT and each NAME[:PORT] (the page's
    port when none is given); without the port too when it is 80, as browsers leave it out."""
    host, port = address
    keys: list[HostKey] = [(str(ipaddress.ip_address(host)), port)]
    for name in names:
        key = host_key(name)
        if key is None:
            raise UsageError(
                f"--page-host: {name!r} is not a host name; write e.g. router.lan or router.lan:8080"
            )
        keys.append((key[0], key[1] or port))
    return frozenset(keys) | {(h, None) for h, p in keys if p == 80}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: App) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        super().__init__(address, handler)


class App:
    """What both listeners serve, and the state behind it."""

    def __init__(
        self, *, socket_path: Path, token: str | None, hosts: frozenset[HostKey] = frozenset()
    ) -> None:
        self.socket_path = socket_path
        self.token = token
        self.hosts = hosts
        self.history = History()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(self.status))
        ProcessCollector(namespace="uplinkd_exporter", registry=self.registry)

    def status(self) -> Mapping[str, Any] | None:
        try:
            return dict(control.call(self.socket_path, {"command": "status"}, timeout=STATUS_TIMEOUT))
        except control.ControlError as e:
            log.debug("status: %s", e)
            return None

    def sample(self) -> None:
        self.history.add(self.status(), now=time.time())

    def authorized(self, header: str | None) -> bool:
        if self.token is None or header is None or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].encode(), self.token.encode())

    def drain(self, command: str, uplink: str) -> tuple[int, str]:
        try:
            control.call(self.socket_path, {"command": command, "uplink": uplink}, timeout=STATUS_TIMEOUT * 3)
        except control.ControlError as e:
            return (503 if "cannot reach" in str(e) else 400), str(e)
        self.sample()
        return 200, f"{command} {uplink}: done"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"uplinkd-exporter/{__version__}"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def _send(self, code: int, body: bytes, content_type: str, extra: Mapping[str, str] = {}) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **extra}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")


class MetricsHandler(_Handler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = exposition.generate_latest(self.server.app.registry)
            self._send(200, body, exposition.CONTENT_TYPE_LATEST)
        elif path == "/":
            self._text(200, "uplinkd-exporter: metrics at /metrics")
        else:
            self._text(404, "not found; metrics are at /metrics")

    do_HEAD = do_GET  # noqa: N815 - http.server dispatches on this name


class PageHandler(_Handler):
    def _host_refused(self) -> bool:
        """Answer 421 unless the Host header names the page (see the module docstring)."""
        header = self.headers.get("Host")
        if header is not None and host_key(header) in self.server.app.hosts:
            return False
        log.info("refused %s %s from %s: Host %r is not the page's", self.command, self.path,
                 self.client_address[0], header)  # fmt: skip
        self._text(421, "this page answers only at its own address; open it by the router's LAN address")
        return True

    def do_GET(self) -> None:
        app = self.server.app
        if self._host_refused():
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, HTML.encode(), "text/html; charset=utf-8")
        elif path == "/app.js":
            self._send(200, SCRIPT.encode(), "text/javascript; charset=utf-8")
        elif path == "/status.json":
            data = app.history.page_json(drain_enabled=app.token is not None, now=time.time())
            self._send(200, json.dumps(data).encode(), "application/json")
        else:
            self._text(404, "not found")

    do_HEAD = do_GET  # noqa: N815 - http.server dispatches on this name

    def do_POST(self) -> None:
        app = self.server.app
        if self._host_refused():
            return
        command = {"/api/drain": "drain", "/api/undrain": "undrain"}.get(self.path)
        if command is None:
            self._text(404, "not found")
            return
        if app.token is None:
            self._text(403, "drain/undrain are off: start the exporter with --page-token-file to allow them")
            return
        if not app.authorized(self.headers.get("Authorization")):
            self._send(401, b"a valid token is required\n", "text/plain", {"WWW-Authenticate": "Bearer"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._text(400, f"body: send a JSON object of at most {MAX_BODY} bytes")
            return
        try:
            body = json.loads(self.rfile.read(length))
            uplink = body["uplink"]
            if not isinstance(uplink, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self._text(400, 'body: send {"uplink": "<name>"}')
            return
        code, text = app.drain(command, uplink)
        log.info("%s %s from %s: %s", command, uplink, self.client_address[0], text)
        self._text(code, text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uplinkd-exporter", description="Prometheus metrics and status page")
    p.add_argument("--socket", type=Path, default=Config().control.socket, help="the daemon's control socket")
    p.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="metrics ADDRESS:PORT ('' = off; default %(default)s)"
    )
    p.add_argument("--page", default="", help="status page ADDRESS:PORT, e.g. the LAN address (default: off)")
    p.add_argument(
        "--page-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a further Host the page answers to (NAME or NAME:PORT; repeatable; default: its address only)",
    )
    p.add_argument("--page-token-file", type=Path, help="allow drain/undrain from the page with this token")
    p.add_argument("--sample-interval", type=float, default=10.0, help="page history sampling, seconds")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--version", action="version", version=__version__)
    return p


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise UsageError(f"--page-token-file: cannot read {path} ({e.strerror})") from None
    if len(token) < 16:
        raise UsageError(
            f"--page-token-file: {path} holds {len(token)} characters; use at least 16 random ones"
        )
    return token


def _sampler(app: App, interval: float, stop: threading.Event) -> None:
    while not stop.is_set():
        app.sample()
        stop.wait(interval)


def _serve(server: _Server, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if not args.listen and not args.page:
            raise UsageError("--listen and --page are both off; nothing to serve")
        if args.page_token_file and not args.page:
            raise UsageError("--page-token-file: the page is off; give --page ADDRESS:PORT too")
        if args.page_host and not args.page:
            raise UsageError("--page-host: the page is off; give --page ADDRESS:PORT too")
        metrics_at = parse_address(args.listen, what="--listen") if args.listen else None
        page_at = parse_address(args.page, what="--page") if args.page else None
        hosts = page_hosts(page_at, args.page_host) if page_at else frozenset()
        if args.sample_interval < 1:
            raise UsageError("--sample-interval: use at least 1 second")
        token = _read_token(args.page_token_file) if args.page_token_file else None
    except UsageError as e:
        print(f"uplinkd-exporter: {e}", file=sys.stderr)
        return 2
    app = App(socket_path=args.socket, token=token, hosts=hosts)
    servers: list[_Server] = []
    try:
        if metrics_at:
            servers.append(_Server(metrics_at, MetricsHandler, app))
        if page_at:
            servers.append(_Server(page_at, PageHandler, app))
    except OSError as e:
        print(f"uplinkd-exporter: cannot listen: {e.strerror}", file=sys.stderr)
        for s in servers:
            s.server_close()
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [_serve(s, f"http {s.server_address}") for s in servers]
    if page_at:
        threads.append(threading.Thread(target=_sampler, args=(app, args.sample_interval, stop), daemon=True))
        threads[-1].start()
    log.info(
        "serving%s%s (daemon at %s)",
        f" metrics on {args.listen}" if metrics_at else "",
        f" the status page on {args.page}{' with drain' if token else ''}" if page_at else "",
        args.socket,
    )
    _notify_ready()
    stop.wait()
    for s in servers:
        s.shutdown()
        s.server_close()
    return 0


def _notify_ready() -> None:
    """READY=1 for a Type=notify unit (a no-op elsewhere)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    target = "\0" + addr[1:] if addr.startswith("@") else addr
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", target)


if __name__ == "__main__":
    sys.exit(main())
