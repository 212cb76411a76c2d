"""A local model served as an OpenAI-compatible endpoint by `transformers serve` (the `serving` extra of transformers).

The model is made ready first (`shared.local.models.model_folder`: a packaged model is assembled and converted once),
then served on the loopback address only, with continuous batching, on the local device
(shared.local.models.local_device: a GPU in bfloat16 when there is one; else the CPU, in bfloat16 where it computes it
natively, else float32). `start_model_server` runs the server for the step that asks the model and waits until it
answers `/health`; leaving it stops the server, so its memory is free before training starts.

What `transformers serve` does differently from an OpenAI endpoint (the local model adapter makes up for the rest,
shared.teacher.local_model):
- it answers only for the model it serves, under that model's folder path, so the adapter asks for it by that name;
- with continuous batching, the sampling settings (temperature, top_p) of the first request hold for every request the
  server answers, and seeds and stop strings are not applied per request: one server serves one job, whose requests
  all share its inference settings, and the adapter cuts a reply at its stop strings itself;
- it answers one choice whatever `n` asks (the teacher client asks again for the rest).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from shared.local.models import TEACHER, Device, local_device, model_folder

HOST = "127.0.0.1"  # loopback only: the server has no authentication
DEFAULT_PORT = 8000
IN_FLIGHT = 8  # requests a CPU answers well at once (bench.serving); more only wait in the server's queue
# A GPU's generation is bound by kernel launches, not arithmetic: it answers far more at once (on one H200, the
# teacher's shape made 164 tokens/s at batch 16, 2,031 at 128, 7,467 at 512: bench.gpu).
GPU_IN_FLIGHT = 256
# The KV cache, in pages of 256 tokens: 64 hold 8 requests of 2,048 tokens (0.9 GB for the 1.5B teacher in float32);
# more requests wait for pages or are moved to memory beside the cache.
# Unset, `transformers serve` reserves 60% of the machine's free memory for it on a CPU.
CACHE_PAGES = 64
GPU_CACHE_PAGES = 2048  # 256 requests of 2,048 tokens: 7 GB for the 1.5B teacher in bfloat16
BATCH_TOKENS = 2048  # tokens computed in one step; a longer prefill takes several
READY_TIMEOUT = 600.0  # loading a 1.5B model takes about a minute on 2 cores
LOG_TAIL_CHARS = 3000
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}  # nothing from the network; idle OpenMP threads sleep


def serve_command(folder: Path, port: int, device: Device | None = None) -> list[str]:
    """`transformers serve` for a model folder on the loopback address, on the local device (`local_device`)."""
    device = device or local_device()
    pages, tokens = (GPU_CACHE_PAGES, BATCH_TOKENS * 8) if device.gpu else (CACHE_PAGES, BATCH_TOKENS)
    return [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder), "--continuous-batching",
            "--cb-num-blocks", str(pages), "--cb-max-batch-tokens", str(tokens),
            "--host", HOST, "--port", str(port), "--dtype", device.dtype, "--device", device.name]


def in_flight() -> int:
    """Requests the local model server answers well at once on this machine's device."""
    return GPU_IN_FLIGHT if local_device().gpu else IN_FLIGHT


def serve(model: str = TEACHER.name, port: int = DEFAULT_PORT) -> int:
    """`distill teacher serve`: serve `model` in the foreground until interrupted; the server's exit code."""
    folder = model_folder(model)
    print(f"serving {model} at http://{HOST}:{port}/v1 (transformers serve; Ctrl-C stops it)", file=sys.stderr,
          flush=True)
    with subprocess.Popen(serve_command(folder, port), env={**os.environ, **OFFLINE}) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:
            _stop(process)
            return 130


class ModelServer:
    """A model served in a subprocess on a free loopback port, started without waiting for it (`state` tells when it
    answers); `stop` ends it."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop, which outlives this call)
        self._process = subprocess.Popen(serve_command(folder, port), stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env={**os.environ, **OFFLINE})

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def state(self) -> tuple[str, str | None]:
        """("ready", None) once it answers `/health`, ("creating", None) while it loads, or ("failed", why) once it
        has exited."""
        if self._process.poll() is not None:
            return "failed", (f"the local model server exited with code {self._process.returncode} before it was "
                              f"ready; its log ends with:\n{_tail(self._log)}")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            if response.status == 200:
                return "ready", None
        return "creating", None

    def wait_ready(self, timeout: float) -> None:
        """Wait until it answers; RuntimeError with its log's tail if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, why = self.state()
            if state == "ready":
                return
            if state == "failed":
                raise RuntimeError(why)
            time.sleep(0.5)
        raise RuntimeError(f"the local model server was not ready within {timeout:g} s; its log ends with:\n"
                           f"{_tail(self._log)}")

    def stop(self) -> None:
        """Stop the server (safe to repeat)."""
        _stop(self._process)
        self._log.close()


@contextlib.contextmanager
def start_model_server(model: str, *, timeout: float = READY_TIMEOUT) -> Iterator[str]:
    """Serve `model` in a subprocess; yields its base URL (…/v1) once it answers, stops it on exit."""
    server = ModelServer(model_folder(model))  # a missing model fails here, before a server starts
    try:
        server.wait_ready(timeout)
        yield server.base_url
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-LOG_TAIL_CHARS:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
