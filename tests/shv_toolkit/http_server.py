"""A throw-away HTTP server on 127.0.0.1 for download tests (thread, ephemeral port).

Serves files of one directory. ``/nolength/<name>`` streams a file without a Content-Length
header (close-delimited), like servers that compress or generate on the fly. Every request path
is counted in ``server.hits`` so tests can prove that a rerun made no request.
"""

from __future__ import annotations

import collections
import functools
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        pass

    def _count(self) -> None:
        self.server.hits[unquote(self.path.split("?")[0])] += 1  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._count()
        super().do_HEAD()

    def do_GET(self) -> None:
        self._count()
        if self.path.startswith("/nolength/"):
            name = unquote(self.path[len("/nolength/"):])
            f = Path(self.directory) / Path(name).name
            if not f.is_file():
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            with open(f, "rb") as fh:
                while chunk := fh.read(64 * 1024):
                    self.wfile.write(chunk)
            return
        super().do_GET()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # clients hang up on purpose (yt-dlp reads a page's first bytes, size caps abort transfers)
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(_Handler, directory=str(root))
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.hits = collections.Counter()  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.root = root
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def hits(self) -> collections.Counter:
        return self.httpd.hits  # type: ignore[attr-defined]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{quote(name)}"


@contextmanager
def serve_directory(root: Path) -> Iterator[LocalServer]:
    """Serve ``root`` on 127.0.0.1:<ephemeral>; stops and joins the thread on exit."""
    srv = LocalServer(root)
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
