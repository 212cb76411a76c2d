"""`distill ui`: the dashboard over this machine's jobs (the local storage folder), on 127.0.0.1 only."""

from __future__ import annotations

import errno
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.dashboard.reading import Running
from shared.dashboard.routes import respond
from shared.ports import BlobStore
from shared.settings import Settings

HOST = "127.0.0.1"  # loopback only: the local dashboard has no sign-in


def dashboard_server(store: BlobStore, container: str, port: int, running: Running | None = None
                     ) -> ThreadingHTTPServer:
    """A server (not yet serving) answering every GET from `shared.dashboard.routes`; port 0 picks a free one."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "distill-ui"

        def do_GET(self) -> None:
            address = urlsplit(self.path)
            answer = respond(store, container, unquote(address.path), dict(parse_qsl(address.query)), running)
            self.send_response(answer.status)
            for name, value in answer.all_headers().items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            """Requests are not logged: the terminal shows the address only."""

    try:
        server = ThreadingHTTPServer((HOST, port), Handler)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise ValueError(f"port {port} on {HOST} is in use: give another with --port (0 picks a free one)") from None
    server.daemon_threads = True
    return server


def serve(store: BlobStore, where: str, port: int, running: Running | None = None) -> int:
    """Serve the jobs in `store` (described to the user as `where`) until Ctrl-C."""
    server = dashboard_server(store, Settings().jobs_container, port, running)
    print(f"Distill dashboard: http://{HOST}:{server.server_port}/ (jobs in {where}; Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("dashboard stopped", file=sys.stderr)
    return 0
