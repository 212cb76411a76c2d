"""What the benchmarks share: generated NLI data, and `distill run` in a fresh process against a test teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.local.samples import nli_pairs, nli_row

ROOT = Path(__file__).resolve().parents[1]


def write_rows(path: Path, count: int, *, seed: int = 0, reference: bool = False) -> Path:
    """`count` distinct NLI rows (a running number makes each premise unique), streamed to `path`."""
    pairs = nli_pairs(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            premise, hypothesis, label = next(pairs)
            row = nli_row(f"{premise[:-1]} (case {i}).", hypothesis, label)
            if not reference:
                row["messages"].pop()
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@contextmanager
def workspace(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"distill-bench-{prefix}-") as tmp:
        yield Path(tmp)


def distill(folder: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """`distill ARGS` in a fresh process with its home in `folder`; (wall seconds, the finished process)."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))  # (and what is there already)
    env = {**os.environ, "DISTILL_HOME": str(folder / "home"), "PYTHONPATH": path}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=folder, env=env, text=True,
                          capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"distill {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done


def job_record(folder: Path, name: str = "status.json") -> dict:
    """A JSON file (the status by default) of the one job run with its home in `folder`."""
    [path] = (folder / "home" / "storage" / "jobs").glob(f"*/{name}")
    return json.loads(path.read_text())


def run_args(train: Path, validation: Path, url: str, *extra: str) -> list[str]:
    return ["run", "--task", "nli", "--train", str(train), "--validation", str(validation), "--teacher-url", url,
            "--teacher-model", "bench-teacher", "--no-finetune", "--min-rows", "1", *extra]
