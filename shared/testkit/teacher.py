"""The project's own OpenAI-compatible test teacher: deterministic answers and scriptable faults, stdlib only.

It answers in the format our prompts ask for (plain, chain of thought, chain of density), from reference
answers keyed by the last user message, or with a fixed per-task fallback. Faults queued with `inject`
reproduce what real endpoints do: rate limits, server errors, refusals, resets, hangs, cut-off or garbled
replies.

    python -m shared.testkit.teacher --answers ../shared/data/gold/nli/train.jsonl --task NLI --port 8011
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shared.tasks import Task
from shared.tasks.base import COT_MARKER, PromptStyle
from shared.tasks.summarization import COD_MARKER, TEST_SUMMARY_WORDS
from shared.testkit.batches import FakeBatches
from shared.testkit.limits import ExponentialLatency, ServerRateLimit
from shared.testkit.responses import Response, error

MODEL_ID = "fake-teacher"
GARBLED = '{"reasoning": "The answer depends on'  # unterminated JSON with no answer in it
REQUEST_LIMIT = 1_000_000  # reported in x-ratelimit-limit-requests
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class Fault(StrEnum):
    RATE_LIMIT = "rate_limit"  # 429; params retry_after (seconds) and/or retry_after_ms; neither: no hint
    SERVER_ERROR = "server_error"  # param status, default 500 (any 5xx, 408, 409...)
    REFUSE = "refuse"  # param status, default 400 (401, 403, 404, 422...): not worth retrying
    RESET = "reset"  # the connection is reset (RST) without a response
    HANG = "hang"  # param seconds (default 5): wait, then close without a response
    TRUNCATE = "truncate"  # finish_reason "length", content cut in half
    INVALID_JSON = "invalid_json"  # garbled, unterminated JSON holding no answer
    WRONG_LABEL = "wrong_label"  # well formed, wrong: other NLI label, QA "Z", MATH "abc", too-long summary
    EMPTY = "empty"  # content ""
    SLOW = "slow"  # param seconds (default 1): wait, then answer normally


@dataclass
class _Pending:
    fault: Fault
    remaining: int
    match: str | None
    params: dict[str, Any]


class FakeTeacher:
    """An OpenAI-compatible chat completions server on 127.0.0.1, in a daemon thread.

    Counters: `requests_total` and `requests_by_key` (last user message -> count) cover every chat request,
    faulted ones included; `faults_served` counts faults by kind. `last_credential` is the bearer token (or
    Azure `api-key` header) of the last chat request, `last_path` its path with query, `last_body` its JSON.
    """

    def __init__(self, answers: Mapping[str, str] | None = None, *, task: Task | None = None,
                 latency: float = 0.0, port: int = 0, rate_limit: ServerRateLimit | None = None,
                 random_latency: ExponentialLatency | None = None, honours_n: bool = False,
                 wrong_rate: float = 0.0, seed: int = 0) -> None:
        self.answers = dict(answers or {})
        self.wrong_rate = wrong_rate  # the share of answers given wrong (WRONG_LABEL's way)
        self.seed = seed  # which answers those are: the same for the same questions asked in any order
        self.honours_n = honours_n  # answer `n` choices; by default one, as many servers do
        self.rate_limit = rate_limit  # a request limit answered with 429 + retry-after (benchmarks)
        self.random_latency = random_latency  # a random delay added to every reply (benchmarks)
        self.batches = FakeBatches(self)  # /v1/files and /v1/batches
        self.task = task
        self.latency = latency
        self._port = port
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests_total = 0
        self.requests_by_key: Counter[str] = Counter()
        self.faults_served: Counter[Fault] = Counter()
        self.last_credential: str | None = None
        self.last_path: str | None = None
        self.last_body: dict[str, Any] | None = None

    # --- life cycle -----------------------------------------------------------------------------------
    def start(self) -> FakeTeacher:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(("127.0.0.1", self._port), self)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-teacher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; waiting faults (HANG, SLOW) wake up and drop."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeTeacher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        """http://127.0.0.1:PORT (an Azure OpenAI client's azure_endpoint)."""
        if self._server is None:
            raise RuntimeError("the fake teacher is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT/v1 (an OpenAI client's base_url)."""
        return f"{self.root_url}/v1"

    def pause(self, seconds: float) -> None:
        """Sleep, waking early when the teacher stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # --- faults ---------------------------------------------------------------------------------------
    def inject(self, fault: Fault, *, times: int = 1, match: str | None = None, **params: Any) -> None:
        """Serve `fault` to the next `times` chat requests whose last user message contains `match`.

        `match` None matches any request. A request takes the first queued fault that matches it.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._pending.append(_Pending(Fault(fault), times, match, params))

    def _take_fault(self, key: str) -> _Pending | None:
        with self._lock:
            for pending in self._pending:
                if pending.match is None or pending.match in key:
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._pending.remove(pending)
                    self.faults_served[pending.fault] += 1
                    return pending
        return None

    # --- answering ------------------------------------------------------------------------------------
    def respond(self, body: dict[str, Any], headers: Mapping[str, str], path: str) -> Response:
        """Record one chat request and decide its response (called by the HTTP handler)."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list", "invalid_request_error")
        key = _last_user(messages)
        number = self._record(key, body, headers, path)
        allowed, limit_headers = self.rate_limit.take() if self.rate_limit else (True, {})
        if not allowed:
            return error(429, "Requests exceed the rate limit of this deployment; retry later.", "429", limit_headers)
        pending = self._take_fault(key)
        fault = pending.fault if pending else None
        params = pending.params if pending else {}
        response = _fault_response(fault, params) or self._completion(number, body, key, fault)
        delay = self.latency + _slow_delay(fault, params) + (self.random_latency.draw() if self.random_latency else 0)
        if self.rate_limit:  # its headers replace the default x-ratelimit-* ones
            kept = {k: v for k, v in response.headers.items() if not k.startswith("x-ratelimit-")}
            response = replace(response, headers={**kept, **limit_headers})
        return replace(response, delay=response.delay + delay)

    def _record(self, key: str, body: dict[str, Any], headers: Mapping[str, str], path: str) -> int:
        """Count the request; returns its number (from 1)."""
        with self._lock:
            self.requests_total += 1
            self.requests_by_key[key] += 1
            self.last_credential = _credential(headers)
            self.last_path = path
            self.last_body = body
            return self.requests_total

    def _completion(self, number: int, body: dict[str, Any], key: str, fault: Fault | None) -> Response:
        messages = body["messages"]
        style = detect_style(messages)
        with self._lock:
            asked = self.requests_by_key[key]  # this request's number among those for the same question
        choices = [_apply(fault, styled(style, self._answer(key, style, fault, f"{asked}/{choice}")))
                   for choice in range(int(body.get("n") or 1) if self.honours_n else 1)]
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        payload = {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or MODEL_ID),
            "choices": [{"index": i, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, "logprobs": None}
                        for i, (content, finish_reason) in enumerate(choices)],
            "usage": _usage(prompt_chars, sum(len(content) for content, _ in choices)),
        }
        remaining = max(0, REQUEST_LIMIT - number)
        headers = {"x-ratelimit-limit-requests": str(REQUEST_LIMIT),
                   "x-ratelimit-remaining-requests": str(remaining)}
        return Response(payload=payload, headers=headers)

    def _answer(self, key: str, style: PromptStyle, fault: Fault | None, which: str) -> str:
        """One answer: the right one, or a wrong one (a WRONG_LABEL fault, or at `wrong_rate`: chosen by a hash of
        the seed, the question and `which` answer to it this is, so concurrency does not change which)."""
        answer = self.answer_for(key, style)
        draw = int.from_bytes(hashlib.sha256(f"{self.seed}/{which}/{key}".encode()).digest()[:8]) / 2**64
        return self._wrong(answer, key) if fault is Fault.WRONG_LABEL or draw < self.wrong_rate else answer

    def answer_for(self, user: str, style: PromptStyle = PromptStyle.PLAIN) -> str:
        """The reference answer for this user message, or the task's deterministic fallback."""
        if user in self.answers:
            return self.answers[user]
        if self.task is not None:
            return self.task.rules.test_answer(user)
        return _first_words(user, TEST_SUMMARY_WORDS) if style is PromptStyle.CHAIN_OF_DENSITY else "ok"

    def _wrong(self, answer: str, user: str) -> str:
        if self.task is not None:
            return self.task.rules.wrong_answer(answer, user)
        return "Let us talk about something else."


def styled(style: PromptStyle, answer: str) -> str:
    """The reply content for `answer` in the format the prompt asked for."""
    if style is PromptStyle.CHAIN_OF_THOUGHT:
        reasoning = "Read the question, weighed each possibility in turn, and kept the one that fits."
        return json.dumps({"reasoning": reasoning, "answer": _json_answer(answer)}, ensure_ascii=False)
    if style is PromptStyle.CHAIN_OF_DENSITY:
        return json.dumps(_density_steps(answer), ensure_ascii=False)
    return answer


def detect_style(messages: list[dict[str, Any]]) -> PromptStyle:
    """Which of our prompts a request carries, so the answer comes in kind."""
    system = messages[0].get("content") if messages and messages[0].get("role") == "system" else ""
    if COD_MARKER in str(system):
        return PromptStyle.CHAIN_OF_DENSITY
    if COT_MARKER in str(system):
        return PromptStyle.CHAIN_OF_THOUGHT
    return PromptStyle.PLAIN


def answers_from_jsonl(path: str | Path) -> dict[str, str]:
    """Reference answers from a JSONL of chat rows: each user message -> the assistant message right after it.

    For a gold single-turn row `[system, user, assistant]` that is its question -> its answer; the first
    answer given for a question wins. A line that is not such a row is passed over: judging the data is
    validation's job, which reports it with its file and line.
    """
    answers: dict[str, str] = {}
    with Path(path).open(encoding="utf-8-sig", errors="replace") as lines:
        for line in lines:
            try:
                messages = json.loads(line)["messages"]
                for asked, answered in itertools.pairwise(messages):
                    if asked["role"] == "user" and answered["role"] == "assistant":
                        answers.setdefault(asked["content"], answered["content"])
            except (ValueError, KeyError, TypeError):
                continue
    return answers


# --- helpers --------------------------------------------------------------------------------------
def _last_user(messages: list[dict[str, Any]]) -> str:
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    return user if isinstance(user, str) else json.dumps(user)


def _credential(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("Authorization") or ""
    if authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ")
    return headers.get("api-key")


def _first_words(text: str, count: int) -> str:
    return " ".join(text.split()[:count])


def _json_answer(answer: str) -> int | float | str:
    """A plain number as a JSON number (MATH), anything else as a string."""
    if not _NUMBER.match(answer):
        return answer
    return float(answer) if "." in answer else int(answer)


def _density_steps(summary: str) -> list[dict[str, str]]:
    """Four increasingly long summaries ending with `summary`, each naming the words it added."""
    words = summary.split()
    steps: list[dict[str, str]] = []
    shown = 0
    for step in range(1, 5):
        upto = math.ceil(len(words) * step / 4)
        added = words[shown:upto][:3]
        text = summary if step == 4 else " ".join(words[:upto])
        steps.append({"missing_entities": "; ".join(added), "denser_summary": text})
        shown = upto
    return steps


def _apply(fault: Fault | None, content: str) -> tuple[str, str]:
    """The content and finish_reason a content fault turns a good reply into."""
    if fault is Fault.TRUNCATE:
        return content[: len(content) // 2], "length"
    if fault is Fault.INVALID_JSON:
        return GARBLED, "stop"
    if fault is Fault.EMPTY:
        return "", "stop"
    return content, "stop"


def _usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    prompt, completion = math.ceil(prompt_chars / 4), math.ceil(completion_chars / 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _slow_delay(fault: Fault | None, params: Mapping[str, Any]) -> float:
    return float(params.get("seconds", 1.0)) if fault is Fault.SLOW else 0.0


def _fault_response(fault: Fault | None, params: Mapping[str, Any]) -> Response | None:
    """The response of a fault that replaces the answer, or None when the answer is still sent."""
    if fault is Fault.RATE_LIMIT:
        return error(429, "Rate limit reached; retry later.", "rate_limit_exceeded", _retry_headers(params))
    if fault is Fault.SERVER_ERROR:
        return error(int(params.get("status", 500)), "The server had an error.", "server_error")
    if fault is Fault.REFUSE:
        return error(int(params.get("status", 400)), "The request was refused.", "invalid_request_error")
    if fault is Fault.RESET:
        return Response(action="reset")
    if fault is Fault.HANG:
        return Response(action="drop", delay=float(params.get("seconds", 5.0)))
    return None


def _retry_headers(params: Mapping[str, Any]) -> dict[str, str]:
    headers = {"x-ratelimit-remaining-requests": "0"}
    if params.get("retry_after") is not None:
        headers["Retry-After"] = str(params["retry_after"])
    if params.get("retry_after_ms") is not None:
        headers["retry-after-ms"] = str(params["retry_after_ms"])
    return headers


# --- HTTP -----------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes the connections itself
    request_queue_size = 512  # the client opens tens of connections at once

    def __init__(self, address: tuple[str, int], teacher: FakeTeacher) -> None:
        self.teacher = teacher
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handleerror(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal here (timeouts, resets); anything else is reported."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleerror(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks send thousands of requests."""

    def do_GET(self) -> None:
        if FakeBatches.handles(self.path):
            self._send(self.server.teacher.batches.get(self.path))
        elif self.path.split("?")[0].rstrip("/").endswith("/models"):
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "distill"}
            self._send(Response(payload={"object": "list", "data": [model]}))
        else:
            self._send(error(404, f"no such path: {self.path}", "not_found"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if FakeBatches.handles(self.path):
            self._send(self.server.teacher.batches.post(self.path, self.headers.get("Content-Type", ""), raw))
            return
        if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
            self._send(error(404, f"no such path: {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(error(400, "the body is not JSON", "invalid_request_error"))
            return
        if not isinstance(body, dict):
            self._send(error(400, "the body is not a JSON object", "invalid_request_error"))
            return
        response = self.server.teacher.respond(body, self.headers, self.path)
        self.server.teacher.pause(response.delay)
        {"send": self._send, "reset": self._reset, "drop": self._drop}[response.action](response)

    def _send(self, response: Response) -> None:
        raw = response.raw
        data = raw if raw is not None else json.dumps(response.payload, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self, _: Response) -> None:
        """Close with SO_LINGER 0: the kernel sends RST, and the client sees a connection reset."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()  # the descriptor closes once finish() has closed rfile and wfile

    def _drop(self, _: Response) -> None:
        self.close_connection = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.testkit.teacher",
                                     description="Serve the test teacher until interrupted.")
    parser.add_argument("--answers", action="append", default=[], metavar="FILE",
                        help="JSONL of rows with reference answers (repeatable)")
    parser.add_argument("--task", type=Task.parse, default=None, help="task for fallback answers, e.g. NLI")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--latency-mean", type=float, default=0.0,
                        help="mean of an exponentially distributed delay added to every reply, in seconds")
    parser.add_argument("--rpm", type=float, help="answer 429 beyond this many requests a minute (token bucket)")
    parser.add_argument("--burst", type=float, help="requests the bucket holds (default: ten seconds' worth)")
    args = parser.parse_args(argv)
    answers: dict[str, str] = {}
    for path in args.answers:
        answers = {**answers_from_jsonl(path), **answers}
    limit = ServerRateLimit(args.rpm, args.burst) if args.rpm else None
    latency = ExponentialLatency(args.latency_mean) if args.latency_mean else None
    with FakeTeacher(answers, task=args.task, latency=args.latency, port=args.port, rate_limit=limit,
                     random_latency=latency) as teacher:
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):  # explicit handlers: inherited dispositions don't matter
            signal.signal(signum, lambda *_: stop.set())
        print(teacher.base_url, flush=True)
        while not stop.wait(0.2):  # a timed wait: the handler runs within 0.2 s of the signal
            pass


if __name__ == "__main__":
    main()
