"""A fault-injecting HTTP proxy between a daemon under test and the local ECS API.

The daemon is pointed at ``FaultProxy.url`` (``AWS_ENDPOINT_URL``); the proxy
forwards each request unchanged (method, path, headers including the SigV4
``Authorization`` and ``X-Amz-Target``, body) to the LocalECS endpoint and
returns its answer, unless one of the behaviours below says otherwise. Every
behaviour can be switched at any time from the test's thread:

- ``throttle_rate``: the probability that an ECS (JSON protocol) request is
  answered HTTP 400 ``ThrottlingException`` "Rate exceeded" instead;
- ``error_rate``: the same for HTTP 500 ``ServerException``;
- ``delay``: seconds to wait before answering each request;
- ``down``: the endpoint is unreachable. With ``down_mode="drop"`` every
  request's connection is closed without an answer; with ``"refuse"`` the
  listening socket is closed too, so new connections are refused, and it is
  opened again on the same port when ``down`` is cleared;
- ``fail_page(operation, page)``: answer HTTP 500 to every request of that
  operation that asks for the Nth page of a listing (the page a ``nextToken``
  from page N-1 leads to), retries included.

The random draws are reproducible: the Nth ECS JSON request that is neither
dropped nor failed as a page is throttled when the Nth number drawn from
``random.Random(seed)`` is below ``throttle_rate`` (and the error draws come
from a generator of their own), so a client that sends its requests one at a
time sees the same faults on every run, however long each request takes. The proxy counts
what it forwarded and what it faulted by operation (the ``X-Amz-Target``
operation, or the ``Action`` of a query-protocol request) and keeps a log of
every request it saw.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = ["DROP", "ERROR", "PAGE", "THROTTLE", "FaultProxy", "ProxiedRequest"]

# Kinds of fault, as counted in FaultProxy.faulted and logged in ProxiedRequest.fault.
THROTTLE = "throttle"
ERROR = "error"
PAGE = "page"
DROP = "drop"

DownMode = Literal["drop", "refuse"]

_JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
# Headers that belong to one connection, not to the request or answer being relayed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_UPSTREAM_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy handled it."""

    at: float  # time.monotonic() when it arrived
    operation: str
    params: dict[str, Any]  # the JSON body, or the query form of a query-protocol request
    page: int | None  # which page of a listing it asked for, when known (1 without a nextToken)
    fault: str | None  # THROTTLE, ERROR, PAGE or DROP; None when forwarded
    status: int | None  # HTTP status returned to the client; None when the connection was dropped


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck in `delay` never holds up the test run
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    """Relays one request at a time on a keep-alive connection, or fails it as the proxy says."""

    server: _Server
    protocol_version = "HTTP/1.1"  # botocore keeps connections alive; so must the proxy

    def do_POST(self) -> None:
        self.server.proxy._handle(self)

    do_GET = do_POST
    do_PUT = do_POST
    do_DELETE = do_POST
    do_HEAD = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to ``target_url`` and injects faults on demand.

    Use as a context manager, or call ``start()`` and ``close()``.
    """

    def __init__(
        self,
        target_url: str,
        *,
        seed: int = 0,
        down_mode: DownMode = "drop",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        target = urlsplit(target_url)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"expected an http://HOST:PORT target, got {target_url!r}")
        self.target_host = target.hostname
        self.target_port = target.port or 80
        self.host = host
        self.port = port
        self.down_mode: DownMode = down_mode
        self._lock = threading.Lock()
        self.seed = seed
        self._throttle_random = random.Random(seed)
        self._error_random = random.Random(f"error-{seed}")
        self._throttle_rate = 0.0
        self._error_rate = 0.0
        self._delay = 0.0
        self._down = False
        self._failed_pages: set[tuple[str, int]] = set()
        self._page_of_token: dict[str, int] = {}
        self._log: list[ProxiedRequest] = []
        self.arrived: Counter[str] = Counter()  # operation -> requests received, counted on arrival
        self.forwarded: Counter[str] = Counter()  # operation -> requests relayed to the target
        self.faulted: Counter[tuple[str, str]] = Counter()  # (operation, kind) -> requests failed here
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the endpoint to give the client under test."""
        if not self.port:
            raise RuntimeError("FaultProxy is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        """Listen on a free port (or the given one) and serve from a daemon thread; return self."""
        if self._server is None:
            self._listen()
        return self

    def close(self) -> None:
        """Stop listening; requests already being relayed end on their own (daemon threads)."""
        self._stop_listening()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _listen(self) -> None:
        server = _Server((self.host, self.port), _Handler)
        server.proxy = self
        self.port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"faultproxy-{self.port}", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread

    def _stop_listening(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- behaviours --------------------------------------------------------------

    @property
    def throttle_rate(self) -> float:
        with self._lock:
            return self._throttle_rate

    @throttle_rate.setter
    def throttle_rate(self, rate: float) -> None:
        with self._lock:
            self._throttle_rate = _probability(rate, "throttle_rate")

    @property
    def error_rate(self) -> float:
        with self._lock:
            return self._error_rate

    @error_rate.setter
    def error_rate(self, rate: float) -> None:
        with self._lock:
            self._error_rate = _probability(rate, "error_rate")

    @property
    def delay(self) -> float:
        with self._lock:
            return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._lock:
            self._delay = float(seconds)

    @property
    def down(self) -> bool:
        with self._lock:
            return self._down

    @down.setter
    def down(self, down: bool) -> None:
        with self._lock:
            changed = self._down != down
            self._down = down
        if not changed or self.down_mode != "refuse":
            return
        if down:
            self._stop_listening()
        else:
            self._listen()  # the same port: the client's endpoint stays valid

    def fail_page(self, operation: str, page: int) -> None:
        """Fail (HTTP 500) every request of ``operation`` for page ``page`` (2 or more) until ``heal_pages()``."""
        if page < 2:
            raise ValueError("page must be 2 or more: page 1 carries no nextToken")
        with self._lock:
            self._failed_pages.add((operation, page))

    def heal_pages(self) -> None:
        """Stop failing pages."""
        with self._lock:
            self._failed_pages.clear()

    # -- what happened -----------------------------------------------------------

    @property
    def requests(self) -> list[ProxiedRequest]:
        """A copy of the log of every request answered (or dropped) so far, in that order."""
        with self._lock:
            return list(self._log)

    def count(self, operation: str | None = None, fault: str | None = None) -> int:
        """Requests seen (of one operation, when given) that got ``fault`` (None: that were forwarded)."""
        with self._lock:
            return sum(1 for r in self._log if (operation is None or r.operation == operation) and r.fault == fault)

    def seen(self, operation: str | None = None) -> int:
        """Requests received so far (of one operation, when given), including those still being answered."""
        with self._lock:
            return self.arrived[operation] if operation is not None else sum(self.arrived.values())

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0) -> bool:
        """Poll ``condition`` until it holds or ``timeout`` seconds pass; return whether it held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    # -- the request path ----------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        target = handler.headers.get("X-Amz-Target")
        operation, params = _identify(target, body, handler.headers.get("Content-Type", ""), handler.path)
        token = params.get("nextToken") if target is not None else None

        with self._lock:
            self.arrived[operation] += 1
            page = 1 if token is None else self._page_of_token.get(str(token))
            if self._down:
                fault: str | None = DROP
            elif page is not None and (operation, page) in self._failed_pages:
                fault = PAGE
            elif target is not None:
                # Both draws every time, so each sequence of faults depends only on the seed and the requests.
                throttled = self._throttle_random.random() < self._throttle_rate
                errored = self._error_random.random() < self._error_rate
                fault = THROTTLE if throttled else ERROR if errored else None
            else:
                fault = None
            delay = self._delay

        if fault == DROP:
            self._record(ProxiedRequest(arrived, operation, params, page, DROP, None), operation, DROP)
            _drop(handler)
            return
        if delay:
            time.sleep(delay)
        if fault == THROTTLE:
            status, headers, answer = _json_error(400, "ThrottlingException", "Rate exceeded")
        elif fault in (ERROR, PAGE):
            status, headers, answer = _json_error(500, "ServerException", "Service unavailable")
        else:
            status, headers, answer = self._forward(handler, body)
            if status == 200 and target is not None and page is not None:
                self._remember_token(answer, page)
        self._record(ProxiedRequest(arrived, operation, params, page, fault, status), operation, fault)
        _reply(handler, status, headers, answer)

    def _forward(self, handler: _Handler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Relay the request to the target; a 502 when the target cannot be reached."""
        connection = http.client.HTTPConnection(self.target_host, self.target_port, timeout=_UPSTREAM_TIMEOUT)
        try:
            connection.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
            for name, value in handler.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            answer = response.read()
            headers = [(name, value) for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP]
            return response.status, headers, answer
        except OSError as error:
            return 502, [("Content-Type", "text/plain")], f"faultproxy: target unreachable: {error}".encode()
        finally:
            connection.close()

    def _remember_token(self, answer: bytes, page: int) -> None:
        try:
            token = json.loads(answer).get("nextToken")
        except (ValueError, AttributeError):
            return
        if token:
            with self._lock:
                self._page_of_token[str(token)] = page + 1

    def _record(self, request: ProxiedRequest, operation: str, fault: str | None) -> None:
        with self._lock:
            self._log.append(request)
            if fault is None:
                self.forwarded[operation] += 1
            else:
                self.faulted[(operation, fault)] += 1


def _probability(rate: float, name: str) -> float:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {rate!r}")
    return float(rate)


def _identify(target: str | None, body: bytes, content_type: str, path: str) -> tuple[str, dict[str, Any]]:
    """(operation, parameters) of a JSON-protocol (X-Amz-Target) or query-protocol request."""
    if target is not None:
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            params = {}
        return target.rpartition(".")[2], params if isinstance(params, dict) else {}
    form = body.decode("utf-8", "replace") if content_type.startswith("application/x-www-form-urlencoded") else ""
    query = dict(parse_qsl(form or urlsplit(path).query, keep_blank_values=True))
    return query.get("Action", urlsplit(path).path), query


def _json_error(status: int, code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """An ECS JSON-protocol error answer: botocore reads the code from ``__type``."""
    headers = [
        ("Content-Type", _JSON_CONTENT_TYPE),
        ("x-amzn-ErrorType", code),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return status, headers, json.dumps({"__type": code, "message": message}).encode()


def _reply(handler: _Handler, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    try:
        handler.send_response_only(status)
        for name, value in headers:
            if name.lower() != "content-length":
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True  # the client went away meanwhile


def _drop(handler: _Handler) -> None:
    """Close the connection without a word: the client sees it reset or closed mid-request."""
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
