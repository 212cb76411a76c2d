"""Teacher URLs in every form users copy from Azure or elsewhere reach the one right request URL.

Each form goes through the manifest and the real `openai` client over real HTTP; the local server stands in for the
endpoint as an HTTP proxy, so the request it receives names the whole URL, host included (plain http: the proxy cannot
see inside TLS, and nothing here depends on the scheme)."""

from __future__ import annotations

import asyncio

import pytest
from hostile_teacher import HostileTeacher, Reply, completion

from shared.manifest.endpoints import ACCEPTED_FORMS, place
from shared.manifest.model import InferenceParameters, ManifestError, TeacherSettings, validate_manifest
from shared.teacher.factory import teacher_for
from shared.teacher.retry import RetryPolicy

SERVERLESS = "http://Meta-Llama-3-1-405B-Instruct-abc.westus3.models.ai.azure.com"
SERVED = SERVERLESS.lower()  # a host name knows no case, and the client sends it in lower case
ONLINE = "http://my-endpoint.westus3.inference.ml.azure.com"
AZURE_OPENAI = "http://my-resource.openai.azure.com"
DEPLOYMENT_URL = f"{AZURE_OPENAI}/openai/deployments/gpt-4o-mini/chat/completions"
FORMS = [  # (teacher fields as written, the kind it is, the request URL)
    ({"url": SERVERLESS}, "azure_ai", f"{SERVED}/v1/chat/completions"),
    ({"url": f"{SERVERLESS}/"}, "azure_ai", f"{SERVED}/v1/chat/completions"),
    ({"url": f"{SERVERLESS}/v1"}, "azure_ai", f"{SERVED}/v1/chat/completions"),
    ({"url": f"{SERVERLESS}/chat/completions"}, "azure_ai", f"{SERVED}/chat/completions"),
    ({"url": f"{SERVERLESS}/v1/chat/completions"}, "azure_ai", f"{SERVED}/v1/chat/completions"),
    ({"url": f"{ONLINE}/score"}, "azure_ai", f"{ONLINE}/v1/chat/completions"),
    ({"url": f"{ONLINE}/v1/chat/completions"}, "azure_ai", f"{ONLINE}/v1/chat/completions"),
    ({"url": AZURE_OPENAI, "model": "gpt-4o"}, "azure_openai",
     f"{AZURE_OPENAI}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"),
    ({"url": f"{AZURE_OPENAI}/", "model": "gpt-4o", "api_version": "2025-01-01-preview"}, "azure_openai",
     f"{AZURE_OPENAI}/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview"),
    ({"url": f"{DEPLOYMENT_URL}?api-version=2024-06-01"}, "azure_openai", f"{DEPLOYMENT_URL}?api-version=2024-06-01"),
    ({"url": DEPLOYMENT_URL.removesuffix("/chat/completions")}, "azure_openai",
     f"{DEPLOYMENT_URL}?api-version=2024-10-21"),
    ({"url": "http://vllm.internal:8000"}, "openai_compatible", "http://vllm.internal:8000/v1/chat/completions"),
    ({"url": "http://vllm.internal:8000/v1/"}, "openai_compatible", "http://vllm.internal:8000/v1/chat/completions"),
    ({"url": "http://vllm.internal:8000/v1/chat/completions"}, "openai_compatible",
     "http://vllm.internal:8000/v1/chat/completions"),
    ({"url": "http://gateway.internal/llm/v1"}, "openai_compatible", "http://gateway.internal/llm/v1/chat/completions"),
    ({"url": "http://bare.internal:9000/chat/completions"}, "openai_compatible",
     "http://bare.internal:9000/chat/completions"),
]
KEY_SETTING = "ENDPOINT_TEST_KEY"


@pytest.mark.parametrize(("fields", "kind", "request_url"), FORMS, ids=[f[0]["url"] for f in FORMS])
def test_each_url_form_reaches_its_one_request_url(fields: dict[str, str], kind: str, request_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = TeacherSettings(**fields, key_setting=KEY_SETTING)
    assert settings.kind.value == kind
    with HostileTeacher(lambda body, key: Reply(completion("entailment"))) as endpoint:
        proxy = endpoint.base_url.removesuffix("/v1")
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy)
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)

        async def ask() -> str:
            async with teacher_for(settings, InferenceParameters(), retry=RetryPolicy(max_retries=0),
                                   environ={KEY_SETTING: "sk-endpoint-test-0001"}) as teacher:
                assert teacher.endpoint == request_url  # what `distill preview` prints
                return (await teacher.complete([{"role": "user", "content": "hi"}])).content

        assert asyncio.run(ask()) == "entailment"
    assert endpoint.targets == [request_url]


@pytest.mark.parametrize(("fields", "kind", "request_url"), FORMS, ids=[f[0]["url"] for f in FORMS])
def test_a_placed_url_placed_again_is_the_same(fields: dict[str, str], kind: str, request_url: str) -> None:
    settings = TeacherSettings(**fields)
    again = TeacherSettings.model_validate(settings.model_dump(mode="json"))
    assert again == settings and place(settings.url or "", kind).url == settings.url


@pytest.mark.parametrize(("teacher", "why"), [
    ({"url": f"{SERVERLESS}/v1/embeddings"}, "not a chat completions route"),
    ({"url": "http://vllm.internal:8000/v1/completions"}, "not a chat completions route"),
    ({"url": f"{ONLINE}/v1/models"}, "not a chat completions route"),
    ({"url": f"{AZURE_OPENAI}/openai/deployments/d/embeddings?api-version=2024-06-01"},
     "not an Azure OpenAI resource or chat deployment URL"),
    ({"url": f"{DEPLOYMENT_URL}?api-version=2024-06-01&x=1"}, "no query but api-version"),
    ({"url": "http://vllm.internal:8000/v1?token=abc"}, "only an Azure OpenAI URL may carry a query"),
    ({"kind": "openai_compatible", "url": DEPLOYMENT_URL}, "the teacher's kind must be azure_openai"),
    ({"url": "ftp://files.internal/v1"}, "must be an http:// or https:// URL"),
    ({"url": f"{DEPLOYMENT_URL}?api-version=2024-06-01", "model": "other"}, "names another model"),
    ({"url": f"{DEPLOYMENT_URL}?api-version=2024-06-01", "api_version": "2025-01-01"}, "names another api_version"),
])
def test_a_url_that_cannot_be_placed_is_refused_with_the_accepted_forms(teacher: dict[str, str], why: str) -> None:
    with pytest.raises(ManifestError) as caught:
        validate_manifest({"task": "nli", "training_file": "t.jsonl", "teacher": teacher})
    message = str(caught.value)
    assert "teacher.url: " in message and why in message
    assert ACCEPTED_FORMS in message or "names another" in message


@pytest.mark.parametrize(("in_flight", "peak"), [(None, 8), (3, 3), (24, 24)])
def test_a_student_is_asked_as_many_at_once_as_its_deployment_answers_well(in_flight: int | None, peak: int) -> None:
    """A model served on a GPU answers hundreds of calls at once, one on a CPU a few; other endpoints get 8."""
    import threading
    import time

    from shared.evaluation import EvalItem
    from shared.manifest.model import TeacherKind
    from shared.students import Reach, ask

    lock, now, most = threading.Lock(), [0], [0]

    def slow(body: dict, key: str | None) -> Reply:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.3)
        with lock:
            now[0] -= 1
        return Reply(completion("fine"))

    items = [EvalItem(str(n), ({"role": "user", "content": f"question {n}"},), "fine", "fine") for n in range(48)]
    with HostileTeacher(slow) as endpoint:
        reach = Reach(TeacherSettings(kind=TeacherKind.LOCAL, model="m"), {}, endpoint.base_url, in_flight)
        answers = ask(reach, items, max_tokens=8)
    assert answers.replies == ["fine"] * len(items) and most[0] == peak
