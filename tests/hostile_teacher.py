"""A teacher that misbehaves on purpose, independent of the project's test teacher: a stdlib HTTP server on
127.0.0.1 whose chat completions are whatever the test's `reply` function makes of the request.

`reply(body, credential)` returns a Reply: its status, JSON body (or raw bytes) and how slowly to send it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    body: dict[str, Any] | bytes
    status: int = 200
    drip_seconds: float = 0.0  # send the body one byte at a time, this far apart
    headers: dict[str, str] = field(default_factory=dict)


def completion(content: str, prompt_tokens: int | None = 10, completion_tokens: int | None = 2) -> dict[str, Any]:
    """A chat completion with the given content and reported usage (None leaves a count out)."""
    usage = {k: v for k, v in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens))
             if v is not None}
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage}


class HostileTeacher:
    """`with HostileTeacher(reply) as teacher:` serves at `teacher.base_url`; `requests` counts chat requests and
    `targets` keeps their request targets (the whole URL when the server is used as an HTTP proxy). `models` answers
    `GET …/models` (default: 404, as many endpoints do)."""

    def __init__(self, reply: Callable[[dict[str, Any], str | None], Reply], models: Reply | None = None) -> None:
        self.reply = reply
        self.models = models or Reply({"error": {"message": "not found"}}, status=404)
        self.requests = 0
        self.targets: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.answer(outer.models)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                with outer._lock:
                    outer.requests += 1
                    outer.targets.append(self.path)
                auth = self.headers.get("authorization") or ""
                self.answer(outer.reply(body, auth.removeprefix("Bearer ") or None))

            def answer(self, answer: Reply) -> None:
                data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if answer.drip_seconds:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(answer.drip_seconds)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> HostileTeacher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
