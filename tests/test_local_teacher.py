"""The local teacher server with a real small model (SmolLM2-135M), through our teacher client and `openai`.

One server, started in a subprocess by `start_local_teacher`, serves the whole module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from shared.local.model_server import BadRequest, Sampling, parse_body, start_local_teacher
from shared.local.models import STUDENT, model_folder
from shared.manifest.model import InferenceParameters, TeacherKind, TeacherSettings
from shared.teacher.factory import teacher_for
from shared.teacher.replies import TeacherReply
from shared.teacher.retry import RetryPolicy

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
    with start_local_teacher(MODEL, max_batch=8, dtype="float32", timeout=300) as url:  # float32: exact batching
        yield url


@pytest.fixture(scope="module")
def tokenizer(base_url: str) -> Any:
    """The model's own tokenizer (the server has converted the model by now)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_folder(MODEL))


def complete(url: str, users: list[str], **inference: Any) -> list[TeacherReply]:
    """One call per user message through our teacher client, all at once."""
    settings = TeacherSettings(kind=TeacherKind.OPENAI_COMPATIBLE, url=url, model=MODEL, timeout_seconds=120)

    async def run() -> list[TeacherReply]:
        async with teacher_for(settings, InferenceParameters(**inference), retry=RetryPolicy(max_retries=0)) as t:
            return await asyncio.gather(*(t.complete(messages(user)) for user in users))

    return asyncio.run(run())


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post_raw(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{url}/chat/completions", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_greedy_reply_is_deterministic_with_real_usage(base_url: str, tokenizer: Any) -> None:
    first, second = (complete(base_url, [QUESTION], max_tokens=24)[0] for _ in range(2))
    assert first.content and first.content == second.content
    assert "Paris" in first.content
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
    stop = "Paris"
    cut = complete(base_url, [QUESTION], max_tokens=24, stop=[stop])[0]
    assert cut.finish_reason == "stop"
    assert cut.content == full[: full.index(stop)]


def test_concurrent_requests_are_batched_and_answered_as_alone(base_url: str) -> None:
    users = [NLI.format(*pair) for pair in PAIRS]
    before = get_json(f"{base_url}/stats")
    together = complete(base_url, users, max_tokens=6)
    after = get_json(f"{base_url}/stats")
    assert all(reply.content for reply in together)
    assert after["requests"] - before["requests"] == len(users)
    assert after["batches"] - before["batches"] < len(users)
    alone = complete(base_url, users[:1], max_tokens=6)[0]
    assert alone.content == together[0].content


def test_a_seed_makes_sampling_reproducible(base_url: str) -> None:
    first, second = complete(base_url, [QUESTION, QUESTION], max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    assert first.content and first.content == second.content


def test_sampling_from_the_top_token_alone_is_greedy(base_url: str) -> None:
    greedy = complete(base_url, [QUESTION], max_tokens=12)[0]
    nucleus = complete(base_url, [QUESTION], max_tokens=12, temperature=1.0, top_p=0.0)[0]
    assert nucleus.content == greedy.content


def test_the_openai_client_lists_the_model_and_sees_a_bad_request(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL, messages=messages(QUESTION), max_tokens=0)


@pytest.mark.parametrize("data", [
    b"not json",
    b"[1, 2]",
    b'{"model": "m"}',
    b'{"messages": []}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": [1]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}',
])
def test_bad_bodies_get_400_with_an_openai_error(base_url: str, data: bytes) -> None:
    status, body = post_raw(base_url, data)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


def test_parse_body_reads_the_openai_parameters() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "stop": "END", "seed": 3}
    assert parse_body(body) == ([{"role": "user", "content": "hi"}], Sampling(5, 0.5, 0.9, ("END",), 3))
    with pytest.raises(BadRequest, match="n must be 1"):
        parse_body({**body, "n": 2})


def test_start_local_teacher_reports_a_child_that_dies(model_cache: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with code 1") as caught, \
            start_local_teacher("no-such-model", timeout=60):
        pass
    assert "model 'no-such-model' is neither a known model" in str(caught.value)
