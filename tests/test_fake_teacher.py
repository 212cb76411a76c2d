"""The fake teacher on its own, over plain HTTP (http.client), independent of our teacher client."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from prompt_texts import cod_system, cot_system

from shared.tasks import Task
from shared.tasks.nli import LABELS
from shared.testkit.teacher import FakeTeacher, Fault, answers_from_jsonl

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Premise: it rains. Hypothesis: the street is wet."
ARTICLE = " ".join(f"Word{i}" for i in range(100))


@pytest.fixture
def fake() -> Iterator[FakeTeacher]:
    with FakeTeacher({QUESTION: "entailment"}, task=Task.NLI) as teacher:
        yield teacher


def post(teacher: FakeTeacher, user: str = QUESTION, *, system: str = "Answer.", timeout: float = 5.0,
         path: str = "/v1/chat/completions", headers: dict[str, str] | None = None,
         connection: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One chat request; returns status, headers (lower-case names) and the JSON body."""
    body = {"model": "m", "messages": [msg("system", system), msg("user", user)]}
    conn = connection or connect(teacher, timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = json.loads(response.read())
    finally:
        if connection is None:
            conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def msg(role: str, text: str) -> dict[str, str]:
    return {"role": role, "content": text}


def connect(teacher: FakeTeacher, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", int(teacher.root_url.rsplit(":", 1)[1]), timeout=timeout)


def content(teacher: FakeTeacher, user: str = QUESTION, system: str = "Answer.") -> str:
    return post(teacher, user, system=system)[2]["choices"][0]["message"]["content"]


# --- answers -----------------------------------------------------------------------------------------------
def test_plain_answer_is_a_chat_completion(fake: FakeTeacher) -> None:
    status, headers, body = post(fake)
    assert status == 200 and headers["content-type"] == "application/json"
    assert int(headers["content-length"]) > 0
    assert body["object"] == "chat.completion" and body["id"] and body["created"] > 0 and body["model"] == "m"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "entailment"}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == -(-(len("Answer.") + len(QUESTION)) // 4)
    assert usage["completion_tokens"] == 3 and usage["total_tokens"] == usage["prompt_tokens"] + 3


def test_chain_of_thought_is_answered_as_a_json_object(fake: FakeTeacher) -> None:
    reply = json.loads(content(fake, system=cot_system(Task.NLI)))
    assert reply["answer"] == "entailment" and reply["reasoning"]


def test_chain_of_thought_math_answer_is_a_json_number() -> None:
    with FakeTeacher({"2 + 40?": "42", "half of 5?": "2.5"}, task=Task.MATH) as teacher:
        system = cot_system(Task.MATH)
        assert json.loads(content(teacher, "2 + 40?", system))["answer"] == 42
        assert json.loads(content(teacher, "half of 5?", system))["answer"] == 2.5


def test_chain_of_density_is_four_steps_ending_with_the_reference() -> None:
    summary = "Alice met Bob in Paris to sign the Treaty of Words."
    with FakeTeacher({ARTICLE: summary}, task=Task.SUMMARIZATION) as teacher:
        steps = json.loads(content(teacher, ARTICLE, cod_system(80)))
        unknown = json.loads(content(teacher, "Another article " + ARTICLE, cod_system(80)))
    assert len(steps) == 4 and all(set(s) == {"missing_entities", "denser_summary"} for s in steps)
    assert steps[-1]["denser_summary"] == summary
    lengths = [len(s["denser_summary"].split()) for s in steps]
    assert lengths == sorted(lengths)
    assert unknown[-1]["denser_summary"] == " ".join(("Another article " + ARTICLE).split()[:40])


@pytest.mark.parametrize(("task", "expected"), [
    (Task.NLI, "neutral"), (Task.NLU_QA, "A"), (Task.MATH, "0"), (None, "ok"),
    (Task.SUMMARIZATION, " ".join(ARTICLE.split()[:40])),
])
def test_fallback_answers(task: Task | None, expected: str) -> None:
    with FakeTeacher(task=task) as teacher:
        assert content(teacher, ARTICLE) == expected


def test_conversation_fallback_refers_to_the_last_user_message() -> None:
    with FakeTeacher(task=Task.CONVERSATION) as teacher:
        reply = content(teacher, "How do I start investing in index funds?")
    assert "How do I start investing" in reply


def test_answers_from_jsonl(tmp_path: Path) -> None:
    rows = [
        [msg("system", "s"), msg("user", "q1"), msg("assistant", "a1")],
        [msg("system", "s"), msg("user", "q1"), msg("assistant", "x")],
        [msg("system", "s"), msg("user", "q2")],
        [msg("system", "s"), msg("user", "hi"), msg("assistant", "hello"), msg("user", "bye"),
         msg("assistant", "goodbye")],
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(json.dumps({"messages": m}) for m in rows) + "\n\n", encoding="utf-8")
    assert answers_from_jsonl(path) == {"q1": "a1", "hi": "hello", "bye": "goodbye"}


def test_answers_from_a_gold_file(shared_data: Path) -> None:
    gold = shared_data / "gold" / "nli" / "validation.jsonl"
    answers = answers_from_jsonl(gold)
    assert len(answers) > 100 and set(answers.values()) <= set(LABELS)


# --- faults ------------------------------------------------------------------------------------------------
def test_rate_limit_sends_429_with_its_hints_then_recovers(fake: FakeTeacher) -> None:
    fake.inject(Fault.RATE_LIMIT, retry_after=2, retry_after_ms=1500)
    status, headers, body = post(fake)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1500"
    assert post(fake)[0] == 200


@pytest.mark.parametrize(("fault", "params", "status"), [
    (Fault.SERVER_ERROR, {}, 500), (Fault.SERVER_ERROR, {"status": 503}, 503),
    (Fault.REFUSE, {}, 400), (Fault.REFUSE, {"status": 401}, 401),
])
def test_error_statuses(fake: FakeTeacher, fault: Fault, params: dict, status: int) -> None:
    fake.inject(fault, **params)
    got, _, body = post(fake)
    assert got == status and body["error"]["message"]


def test_reset_closes_the_connection_without_a_response(fake: FakeTeacher) -> None:
    fake.inject(Fault.RESET)
    with pytest.raises(ConnectionResetError):
        post(fake)
    assert post(fake)[0] == 200


def test_hang_outlasts_the_client_then_drops(fake: FakeTeacher) -> None:
    fake.inject(Fault.HANG, seconds=1)
    with pytest.raises(TimeoutError):
        post(fake, timeout=0.2)
    fake.inject(Fault.HANG, seconds=0.2)
    with pytest.raises(http.client.RemoteDisconnected):
        post(fake)


def test_stop_wakes_a_hanging_request() -> None:
    teacher = FakeTeacher().start()
    teacher.inject(Fault.HANG, seconds=30)
    errors: list[Exception] = []

    def hang() -> None:
        try:
            post(teacher, timeout=30)
        except (OSError, http.client.HTTPException) as err:
            errors.append(err)

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    teacher.stop()
    thread.join(5)
    assert time.monotonic() - started < 2 and errors


def test_truncate_cuts_the_content_in_half(fake: FakeTeacher) -> None:
    system = cot_system(Task.NLI)
    full = content(fake, system=system)
    fake.inject(Fault.TRUNCATE)
    choice = post(fake, system=system)[2]["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == full[: len(full) // 2]


def test_invalid_json_is_garbled(fake: FakeTeacher) -> None:
    fake.inject(Fault.INVALID_JSON)
    garbled = content(fake, system=cot_system(Task.NLI))
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbled)
    assert "entailment" not in garbled


@pytest.mark.parametrize(("task", "reference", "check"), [
    (Task.NLI, "entailment", lambda a: a in LABELS and a != "entailment"),
    (Task.NLU_QA, "B", lambda a: a == "Z"),
    (Task.MATH, "42", lambda a: a == "abc"),
    (Task.SUMMARIZATION, "A short summary.", lambda a: len(a.split()) > 2000),
])
def test_wrong_label_is_well_formed_but_wrong(task: Task, reference: str, check: Any) -> None:
    with FakeTeacher({QUESTION: reference}, task=task) as teacher:
        teacher.inject(Fault.WRONG_LABEL)
        assert check(content(teacher))


def test_wrong_label_keeps_the_chain_of_thought_format(fake: FakeTeacher) -> None:
    fake.inject(Fault.WRONG_LABEL)
    reply = json.loads(content(fake, system=cot_system(Task.NLI)))
    assert reply["answer"] in LABELS and reply["answer"] != "entailment"


def test_empty(fake: FakeTeacher) -> None:
    fake.inject(Fault.EMPTY)
    choice = post(fake)[2]["choices"][0]
    assert choice["message"]["content"] == "" and choice["finish_reason"] == "stop"


def test_slow_answers_late_and_latency_delays_every_reply(fake: FakeTeacher) -> None:
    fake.inject(Fault.SLOW, seconds=0.3)
    started = time.monotonic()
    assert content(fake) == "entailment"
    assert time.monotonic() - started >= 0.3
    with FakeTeacher(latency=0.2) as slow:
        started = time.monotonic()
        assert content(slow) == "ok" and time.monotonic() - started >= 0.2


def test_faults_follow_match_and_times(fake: FakeTeacher) -> None:
    fake.inject(Fault.EMPTY, times=2, match="second")
    assert content(fake, "first question") == "neutral"
    assert [content(fake, "the second question") for _ in range(3)] == ["", "", "neutral"]
    assert fake.faults_served == {Fault.EMPTY: 2}
    with pytest.raises(ValueError, match="times"):
        fake.inject(Fault.EMPTY, times=0)


# --- bookkeeping and HTTP ----------------------------------------------------------------------------------
def test_counters_and_last_request(fake: FakeTeacher) -> None:
    fake.inject(Fault.SERVER_ERROR)
    post(fake, headers={"Authorization": "Bearer sk-fake"})
    post(fake, "other")
    post(fake, path="/openai/deployments/d/chat/completions?api-version=1", headers={"api-key": "azure-key"})
    assert fake.requests_total == 3
    assert fake.requests_by_key == {QUESTION: 2, "other": 1}
    assert fake.faults_served == {Fault.SERVER_ERROR: 1}
    assert fake.last_credential == "azure-key"
    assert fake.last_path == "/openai/deployments/d/chat/completions?api-version=1"
    assert fake.last_body is not None and fake.last_body["messages"][-1]["content"] == QUESTION


def test_keep_alive_serves_several_requests_on_one_connection(fake: FakeTeacher) -> None:
    with closing(connect(fake)) as connection:
        statuses = [post(fake, connection=connection)[0] for _ in range(3)]
    assert statuses == [200, 200, 200]


def test_models_unknown_paths_and_bad_bodies(fake: FakeTeacher) -> None:
    with closing(connect(fake)) as connection:
        connection.request("GET", "/v1/models")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["data"][0]["id"]
        connection.request("GET", "/v1/nothing")
        response = connection.getresponse()
        assert response.status == 404 and json.loads(response.read())["error"]
        connection.request("POST", "/v1/chat/completions", "not json", {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 400 and json.loads(response.read())["error"]
    assert fake.requests_total == 0


def test_many_concurrent_connections(fake: FakeTeacher) -> None:
    results: list[int] = []

    def one(i: int) -> None:
        results.append(post(fake, f"q{i}")[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 50 and fake.requests_total == 50


def test_command_line_serves_until_interrupted(tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    row = [msg("system", "s"), msg("user", "q"), msg("assistant", "a")]
    gold.write_text(json.dumps({"messages": row}) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "shared.testkit.teacher", "--answers", str(gold), "--task", "nli"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            port = int(base_url.rsplit(":", 1)[1].removesuffix("/v1"))
            body = json.dumps({"model": "m", "messages": row[:2]})
            with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as connection:
                connection.request("POST", "/v1/chat/completions", body)
                assert json.loads(connection.getresponse().read())["choices"][0]["message"]["content"] == "a"
        finally:
            process.send_signal(signal.SIGINT)
        try:
            assert process.wait(15) == 0
        except subprocess.TimeoutExpired:
            process.kill()  # fail without leaving the suite waiting on a server that did not stop
            raise
