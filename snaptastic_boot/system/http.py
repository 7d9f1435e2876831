"""A small HTTP/1.1 client for the instance metadata service, on the standard library.

The metadata service is a few GETs and one PUT on a link-local address: `requests` (and the tenth of a second its
import costs at every boot) buys nothing here. One kept-alive connection, a connect timeout and a read timeout,
and two kinds of failure an operator can tell apart.
"""

from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """The request got no answer."""


class Timeout(HttpError):
    """No answer in time."""


class ConnectError(HttpError):
    """Refused, unreachable, or the connection broke."""


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Session:
    """Requests to one service over one kept-alive connection (made again when it breaks)."""

    def __init__(self) -> None:
        self._conn: http.client.HTTPConnection | None = None
        self._where: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def get(self, url: str, headers: dict[str, str] | None = None, timeout: tuple[float, float] = (2.0, 5.0)) -> Response:
        return self.request("GET", url, headers or {}, timeout)

    def put(self, url: str, headers: dict[str, str] | None = None, timeout: tuple[float, float] = (2.0, 5.0)) -> Response:
        return self.request("PUT", url, headers or {}, timeout)

    def request(self, method: str, url: str, headers: dict[str, str], timeout: tuple[float, float]) -> Response:
        parts = urlsplit(url)
        where = (parts.hostname or "", parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connect_timeout, read_timeout = timeout
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None and self._where == where
                conn = self._connection(where, connect_timeout) if not reused else self._conn
                assert conn is not None
                try:
                    if conn.sock is not None:
                        conn.sock.settimeout(read_timeout)
                    conn.request(method, path, body=b"" if method == "PUT" else None, headers=headers)
                    answer = conn.getresponse()
                    body = answer.read()
                except (TimeoutError, socket.timeout) as exc:
                    self.close()
                    raise Timeout(f"no answer in {read_timeout:g}s") from exc
                except (http.client.HTTPException, OSError) as exc:
                    self.close()
                    if reused and attempt == 1:
                        continue  # the service closed the kept-alive connection meanwhile: once more, afresh
                    raise ConnectError(str(exc) or type(exc).__name__) from exc
                if answer.will_close:
                    self.close()
                return Response(answer.status, body)
        raise ConnectError("no connection")  # not reached: the second attempt returns or raises

    def _connection(self, where: tuple[str, int], connect_timeout: float) -> http.client.HTTPConnection:
        self.close()
        conn = http.client.HTTPConnection(where[0], where[1], timeout=connect_timeout)
        try:
            conn.connect()
        except (TimeoutError, socket.timeout) as exc:
            raise Timeout(f"no connection in {connect_timeout:g}s") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn, self._where = conn, where
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._where = None
