"""An OpenAI-compatible chat-completions server for a local model, batching concurrent requests on the CPU.

One generation thread takes up to `max_batch` queued requests at a time, left-pads their prompts and decodes
them together (each row with its own max_tokens, stop strings, temperature, top_p and seed); a finished row
leaves the batch at once, and requests that arrive meanwhile wait for the next batch. Serves
POST /v1/chat/completions (non-streaming; the body's `model` is ignored), GET /v1/models and GET /v1/stats
(requests and batches served, tokens, busy seconds).

    python -m shared.local.model_server --port 8000

Weights run in bfloat16 where the CPU has native bfloat16 arithmetic (several times faster than float32 there),
else in float32; idle OpenMP threads sleep rather than spin, which keeps a busy machine from slowing it 5x.
torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from shared.local.models import TEACHER, ModelUnavailable, model_folder, native_dtype, prepare_torch

if TYPE_CHECKING:
    import torch

READY = "distill teacher ready at"
DEFAULT_MODEL = TEACHER.name
DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH = 8
DTYPES = ("auto", "bfloat16", "float32")  # auto: bfloat16 where the CPU has native bfloat16 arithmetic
DEFAULT_MAX_TOKENS = 1024  # when a request names none
GATHER_SECONDS = 0.02  # how long a new batch waits for more requests to join it
MAX_STOP_STRINGS = 4
STDERR_TAIL_CHARS = 3000
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class BadRequest(ValueError):
    """The request body is not a valid chat completion request (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Sampling:
    """The generation parameters of one request."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """The reply to one request."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int  # tokens generated, EOS included


@dataclass
class _Job:
    """One request while it is generated."""

    prompt: list[int]
    sampling: Sampling
    future: Future[Completion] = field(default_factory=Future)
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)  # generated, EOS excluded
    generated: int = 0
    text: str | None = None  # set when a stop string cut it
    finish_reason: str | None = None

    def add(self, token: int, eos: frozenset[int], decode: Callable[[list[int]], str]) -> None:
        """Take one generated token and decide whether the job is finished."""
        self.generated += 1
        if token in eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        if self.sampling.stop:
            text = decode(self.tokens)
            cuts = [at for at in (text.find(s) for s in self.sampling.stop) if at >= 0]
            if cuts:
                self.text, self.finish_reason = text[: min(cuts)], "stop"
                return
        if self.generated >= self.sampling.max_tokens:
            self.finish_reason = "length"


# --- request parsing ----------------------------------------------------------------------------------
def parse_body(body: Any) -> tuple[list[dict[str, str]], Sampling]:
    """The messages and sampling parameters of a chat completion body; raises BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("stream is not supported")
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    sampling = Sampling(
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else _integer(max_tokens, "max_tokens", minimum=1),
        temperature=_number(body.get("temperature", 0.0), "temperature", 0.0, 2.0),
        top_p=_number(body.get("top_p", 1.0), "top_p", 0.0, 1.0),
        stop=_stop_strings(body.get("stop")),
        seed=None if body.get("seed") is None else _integer(body["seed"], "seed"),
    )
    return _messages(body.get("messages")), sampling


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("messages must be a non-empty list")
    messages = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message must be an object with a string role")
        messages.append({"role": message["role"], "content": _content(message.get("content"))})
    return messages


def _content(value: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise BadRequest("message content must be a string or a list of text parts")


def _integer(value: Any, name: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise BadRequest(f"{name} must be an integer" + (f" >= {minimum}" if minimum is not None else ""))
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _stop_strings(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value or []
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) for s in stops):
        raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings")
    return tuple(s for s in stops if s)


# --- the model ------------------------------------------------------------------------------------------
class LocalModel:
    """A causal LM and its tokenizer, generating for a batch of jobs at once."""

    def __init__(self, folder: Path, dtype: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.dtype = dtype
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
        self.context = int(self.model.config.max_position_embeddings)
        eos = self.model.generation_config.eos_token_id
        self.eos = frozenset([eos] if isinstance(eos, int) else eos or []) | {self.tokenizer.eos_token_id} - {None}
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos)
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens: the chat template with the assistant turn opened."""
        with self._tokenizer_lock:
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])

    def decode(self, tokens: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def generate(self, jobs: list[_Job]) -> None:
        """Generate every job to its end, together; a finished job leaves the batch."""
        import torch
        from transformers import DynamicCache

        with torch.inference_mode():
            ids, mask = _left_padded([job.prompt for job in jobs], self.pad)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache(config=self.model.config)
            logits = self._forward(ids, mask, positions, cache)
            active, last = list(jobs), positions[:, -1]
            while True:
                tokens = _next_tokens(logits, active)
                for job, token in zip(active, tokens.tolist(), strict=True):
                    job.add(token, self.eos, self.decode)
                keep = [i for i, job in enumerate(active) if job.finish_reason is None]
                if not keep:
                    return
                if len(keep) < len(active):
                    index = torch.tensor(keep)
                    cache.batch_select_indices(index)
                    active, tokens, mask, last = [active[i] for i in keep], tokens[index], mask[index], last[index]
                mask, last = torch.cat([mask, mask.new_ones(len(keep), 1)], dim=1), last + 1
                logits = self._forward(tokens[:, None], mask, last[:, None], cache)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        """The next-token logits (float32) of each row."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    def completion(self, job: _Job) -> Completion:
        """The reply of a finished job."""
        assert job.finish_reason is not None, "the job is still being generated"
        text = job.text if job.text is not None else self.decode(job.tokens)
        return Completion(text, job.finish_reason, len(job.prompt), job.generated)


def _left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of the prompts, padded on the left to the longest."""
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def _next_tokens(logits: torch.Tensor, jobs: list[_Job]) -> torch.Tensor:
    """Each row's next token: greedy at temperature 0, else sampled with top_p from the job's own generator."""
    tokens = logits.argmax(dim=-1)
    for row, job in enumerate(jobs):
        if job.sampling.temperature > 0:
            tokens[row] = _sample(logits[row], job.sampling, job.generator)
    return tokens


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    import torch

    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    sorted_probs, order = probs.sort(descending=True)
    outside = sorted_probs.cumsum(0) - sorted_probs >= sampling.top_p  # the nucleus: the top tokens up to top_p
    outside[0] = False
    choice = torch.multinomial(sorted_probs.masked_fill(outside, 0.0), 1, generator=generator)
    return order[choice[0]]


# --- batching ---------------------------------------------------------------------------------------------
@dataclass
class Stats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_seconds: float = 0.0


class BatchingEngine:
    """Queues requests and serves them from one generation thread, up to `max_batch` at a time."""

    def __init__(self, model: LocalModel, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._stats = Stats()
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="local-teacher-generation", daemon=True).start()

    def submit(self, messages: list[dict[str, str]], sampling: Sampling) -> Future[Completion]:
        """Queue one request; raises BadRequest when its prompt leaves no room in the context."""
        try:
            prompt = self.model.prompt_ids(messages)
        except Exception as err:  # the chat template rejects what it cannot render (roles, order)
            raise BadRequest(f"the chat template cannot render these messages: {err}") from err
        room = self.model.context - len(prompt)
        if room < 1:
            raise BadRequest(f"the prompt has {len(prompt)} tokens; the context holds {self.model.context}")
        job = _Job(prompt, replace(sampling, max_tokens=min(sampling.max_tokens, room)))
        job.generator = _generator(sampling.seed) if sampling.temperature > 0 else None
        self._queue.put(job)
        return job.future

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**asdict(self._stats), "max_batch": self.max_batch, "dtype": self.model.dtype,
                    "queued": self._queue.qsize()}

    def _run(self) -> None:
        while True:
            jobs = self._next_batch()
            started = time.monotonic()
            try:
                self.model.generate(jobs)
                completions = [self.model.completion(job) for job in jobs]
            except Exception as err:  # fail this batch's requests, keep serving
                for job in jobs:
                    job.future.set_exception(err)
                continue
            self._count(completions, time.monotonic() - started)
            for job, completion in zip(jobs, completions, strict=True):
                job.future.set_result(completion)

    def _next_batch(self) -> list[_Job]:
        """The oldest queued job and those that arrive within GATHER_SECONDS, up to max_batch."""
        jobs = [self._queue.get()]
        deadline = time.monotonic() + GATHER_SECONDS
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return jobs

    def _count(self, completions: list[Completion], seconds: float) -> None:
        with self._lock:
            s = self._stats
            s.requests += len(completions)
            s.batches += 1
            s.largest_batch = max(s.largest_batch, len(completions))
            s.prompt_tokens += sum(c.prompt_tokens for c in completions)
            s.completion_tokens += sum(c.completion_tokens for c in completions)
            s.busy_seconds += seconds


def _generator(seed: int | None) -> torch.Generator:
    """A private random generator: seeded, a request's samples do not depend on the others in its batch."""
    import torch

    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


# --- HTTP ---------------------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    engine: BatchingEngine  # set once the model is loaded, before serving

    def __init__(self, address: tuple[str, int], model_id: str) -> None:
        super().__init__(address, _Handler)  # bound now: a busy port fails before the model loads
        self.model_id = model_id

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal; anything else is reported."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a labelling run sends thousands of requests."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/models"):
            model = {"id": self.server.model_id, "object": "model", "created": 0, "owned_by": "distill"}
            self._send(200, {"object": "list", "data": [model]})
        elif path.endswith("/stats"):
            self._send(200, self.server.engine.stats())
        else:
            self._send_error(404, f"no such path: {self.path}", "not_found")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
            self._send_error(404, f"no such path: {self.path}", "not_found")
            return
        try:
            future = self.server.engine.submit(*parse_body(json.loads(raw)))
        except ValueError as err:  # BadRequest, or a body that is not JSON
            self._send_error(400, str(err), "invalid_request_error")
            return
        try:
            completion = future.result()
        except Exception as err:
            self._send_error(500, f"generation failed: {type(err).__name__}: {err}", "server_error")
            return
        self._send(200, _completion_payload(completion, self.server.model_id))

    def _send_error(self, status: int, message: str, code: str) -> None:
        self._send(status, {"error": {"message": message, "type": code, "param": None, "code": code}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _completion_payload(completion: Completion, model_id: str) -> dict[str, Any]:
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "total_tokens": completion.prompt_tokens + completion.completion_tokens}
    message = {"role": "assistant", "content": completion.text}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason, "logprobs": None}],
        "usage": usage,
    }


# --- entry points ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    """Load the model, print the ready line, and serve until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt), _Server((args.host, args.port), Path(args.model).name) as server:
        started = time.monotonic()
        try:
            model = load_model(args.model, args.dtype)
        except ModelUnavailable as err:
            sys.exit(f"distill teacher serve: {err}")
        print(f"loaded {args.model} as {model.dtype} in {time.monotonic() - started:.0f} s, max_batch {args.max_batch}",
              file=sys.stderr, flush=True)
        server.engine = BatchingEngine(model, args.max_batch)
        print(f"{READY} http://{args.host}:{server.server_address[1]}/v1", flush=True)
        server.serve_forever()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill teacher serve",
                                     description="Serve a local model as an OpenAI-compatible teacher.")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a known model's name, an HF folder or a .gguf file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: any free port")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="requests generated together")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="auto: bfloat16 on CPUs with AVX512-BF16 or AMX (3-6x faster there), else float32")
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def load_model(model: str, dtype: str = "auto") -> LocalModel:
    """The model ready to generate, with torch using every core."""
    folder = model_folder(model)  # fails before the slow imports when the model is missing
    prepare_torch()
    return LocalModel(folder, native_dtype() if dtype == "auto" else dtype)


@contextlib.contextmanager
def start_local_teacher(model: str, *, port: int = 0, max_batch: int | None = None, dtype: str = "auto",
                        timeout: float = 600) -> Iterator[str]:
    """Run the server for `model` in a subprocess; yields its base URL (…/v1) once it serves, stops it on exit."""
    command = [sys.executable, "-m", "shared.local.model_server", "--model", model,
               "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype]
    if max_batch is not None:
        command += ["--max-batch", str(max_batch)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                   text=True, env=env)
        try:
            yield _ready_url(process, stderr, timeout)
        finally:
            _terminate(process)


def _ready_url(process: subprocess.Popen[str], stderr: IO[bytes], timeout: float) -> str:
    """The URL in the child's ready line; RuntimeError with its stderr's tail if it exits or times out first."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"the local teacher exited with code {process.wait()} before it was ready; "
                               f"its stderr ends with:\n{_tail(stderr)}")
        if line.startswith(READY):
            return line.removeprefix(READY).strip()
    raise RuntimeError(f"the local teacher was not ready within {timeout:g} s; its stderr ends with:\n{_tail(stderr)}")


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Read the child's stdout to its end (so it never blocks on a full pipe); None marks the end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]


def _terminate(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
