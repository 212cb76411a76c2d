"""The local model server (`transformers serve`) with a real small model (SmolLM2-135M), through the local model
adapter and `openai`: the real local path of `distill run --teacher local`.

One server, started in a subprocess by `start_model_server`, serves most of the module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from shared.local.model_server import HOST, free_port, serve_command, start_model_server
from shared.local.models import STUDENT, ModelUnavailable, model_folder, native_dtype, sampling
from shared.manifest.model import InferenceParameters, TeacherKind, TeacherSettings
from shared.teacher.factory import teacher_for
from shared.teacher.replies import TeacherReply
from shared.teacher.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
MODEL = STUDENT.name
QUESTION = "What is the capital of France? Answer in one sentence."
NLI = "Premise: {}. Hypothesis: {}. Answer with one word: entailment, neutral or contradiction."
PAIRS = [("A man plays a guitar", "A person makes music"), ("A dog sleeps", "A cat runs"),
         ("Kids play in snow", "It is winter"), ("A woman reads", "Nobody reads"),
         ("Two men cook", "People make food"), ("A bird sings", "The bird is silent")]


def messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$DISTILL_MODEL_CACHE if set (conversions are reused), else a fresh folder."""
    if importlib.util.find_spec(STUDENT.parts[0][0]) is None:
        pytest.skip(f"{MODEL} is not installed: {STUDENT.install}")
    cache = os.environ.get("DISTILL_MODEL_CACHE") or str(tmp_path_factory.mktemp("models"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILL_MODEL_CACHE", cache)
        yield Path(cache)


@pytest.fixture(scope="module")
def base_url(model_cache: Path) -> Iterator[str]:
    with start_model_server(MODEL, timeout=300) as url:
        yield url


def complete(url: str, users: list[str], **inference: Any) -> list[TeacherReply]:
    """One call per user message through the local model adapter (as `distill run` makes them), all at once."""
    settings = TeacherSettings(kind=TeacherKind.LOCAL, model=MODEL, timeout_seconds=120)

    async def run() -> list[TeacherReply]:
        async with teacher_for(settings, InferenceParameters(**inference), local_url=url,
                               retry=RetryPolicy(max_retries=0)) as t:
            return await asyncio.gather(*(t.complete(messages(user)) for user in users))

    return asyncio.run(run())


def test_the_server_answers_on_loopback_in_the_projects_dtype(model_cache: Path) -> None:
    command = serve_command(model_folder(MODEL), 8123)
    assert command[command.index("--host") + 1] == HOST == "127.0.0.1"
    assert command[command.index("--dtype") + 1] == native_dtype() and "--continuous-batching" in command


def test_greedy_replies_are_deterministic_with_real_usage(base_url: str) -> None:
    from transformers import AutoTokenizer

    first, second = (complete(base_url, [QUESTION], max_tokens=24)[0] for _ in range(2))
    assert first.content and first.content == second.content
    assert "Paris" in first.content
    tokenizer = AutoTokenizer.from_pretrained(model_folder(MODEL))
    prompt = tokenizer.apply_chat_template(messages(QUESTION), add_generation_prompt=True)["input_ids"]
    assert first.usage.prompt_tokens == len(prompt)
    assert 1 <= first.usage.completion_tokens <= 24
    assert first.finish_reason == "stop" or first.usage.completion_tokens == 24


def test_max_tokens_ends_with_length(base_url: str) -> None:
    reply = complete(base_url, [QUESTION], max_tokens=3)[0]
    assert reply.finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    assert reply.content


def test_a_stop_string_cuts_the_text(base_url: str) -> None:
    full = complete(base_url, [QUESTION], max_tokens=24)[0].content or ""
    cut = complete(base_url, [QUESTION], max_tokens=24, stop=["Paris"])[0]
    assert cut.finish_reason == "stop"
    assert cut.content == full[: full.index("Paris")]


def test_concurrent_requests_are_answered_as_alone(base_url: str) -> None:
    users = [NLI.format(*pair) for pair in PAIRS]
    together = complete(base_url, users, max_tokens=6)
    assert all(reply.content for reply in together)
    alone = complete(base_url, users[:1], max_tokens=6)[0]
    assert alone.content == together[0].content


def test_the_server_lists_its_folder_and_the_adapter_asks_for_it(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [str(model_folder(MODEL))]
    with pytest.raises(openai.BadRequestError) as refused:  # a request under another name is refused
        client.chat.completions.create(model=MODEL, messages=messages(QUESTION), max_tokens=4)
    assert "pinned" in refused.value.response.json()["detail"]
    settings = TeacherSettings(kind=TeacherKind.LOCAL, model=MODEL)
    adapter = teacher_for(settings, InferenceParameters(), local_url=base_url)
    assert adapter.request_body(messages(QUESTION))["model"] == MODEL  # what preview shows and the cache keys


def test_a_server_for_a_sampling_job_samples(model_cache: Path) -> None:
    """The converted model samples when asked to (its generation config allows it); the first request's temperature
    holds for the server's life, so this job has a server of its own."""
    settings = TeacherSettings(kind=TeacherKind.LOCAL, model=MODEL, timeout_seconds=120)

    async def sample(url: str) -> list[TeacherReply]:
        async with teacher_for(settings, InferenceParameters(temperature=1.0, max_tokens=12), local_url=url) as t:
            return await t.complete_choices([{"role": "user", "content": "Write a random word."}], 6)

    with start_model_server(MODEL, timeout=300) as url:
        replies = asyncio.run(sample(url))
    assert len(replies) == 6 and len({r.content for r in replies}) > 1


def test_a_converted_model_is_given_sampling_once(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    assert sampling(tmp_path) == tmp_path
    assert json.loads((tmp_path / "generation_config.json").read_text()) == {"eos_token_id": 2, "do_sample": True}
    stamp = (tmp_path / "generation_config.json").stat().st_mtime_ns
    sampling(tmp_path)
    assert (tmp_path / "generation_config.json").stat().st_mtime_ns == stamp


def test_a_missing_model_fails_before_any_server_and_a_broken_one_reports_its_log(tmp_path: Path,
                                                                                  model_cache: Path) -> None:
    with pytest.raises(ModelUnavailable, match="'no-such-model' is neither a known model"), \
            start_model_server("no-such-model"):
        pass
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(RuntimeError, match="exited with code") as caught, start_model_server(str(broken), timeout=120):
        pass
    assert str(caught.value).split("its log ends with:\n", 1)[1].strip()  # the server's own words on what failed


def test_distill_teacher_serve_serves_until_interrupted(model_cache: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "shared.cli", "teacher", "serve", "--model", MODEL, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
                    assert json.load(response) == {"status": "ok"}
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"not serving: {process.stderr.read() if process.poll() is not None else 'timeout'}")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) in (0, 130)
    finally:
        if process.poll() is None:
            process.kill()
    assert f"serving {MODEL} at http://{HOST}:{port}/v1" in (process.stderr.read() if process.stderr else "")
