"""A teacher URL in any form users copy from Azure or elsewhere, placed: what kind of endpoint it is, and the one
request URL it leads to (for Azure OpenAI: the resource's URL, with the deployment and API version the URL named,
which the `openai` client makes into the request URL).

- Azure AI serverless, `https://<endpoint>.<region>.models.ai.azure.com`, and Azure Machine Learning online endpoints,
  `https://<endpoint>.<region>.inference.ml.azure.com`, with or without `/v1`, `/chat/completions` or `/score`.
- Azure OpenAI, `https://<resource>.openai.azure.com` (or `.cognitiveservices.azure.com`), with or without
  `/openai/deployments/<deployment>/chat/completions?api-version=<version>`.
- Any OpenAI-compatible base URL (OpenAI, vLLM, a gateway), with or without `/v1` or `/chat/completions`.

A URL that ends in `/chat/completions` is called exactly there; any other base URL gets `/chat/completions` after it,
a bare host `/v1/chat/completions` (the route of OpenAI, vLLM and Azure AI), and so does an online endpoint's
`/score`. Anything else is refused with the forms above. Placing a placed URL again changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

CHAT = "/chat/completions"
AZURE_OPENAI_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com")
AZURE_AI_HOSTS = (".models.ai.azure.com", ".inference.ml.azure.com")
_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)(?:/chat/completions)?$")
_NOT_CHAT = ("/completions", "/embeddings", "/responses", "/models", "/score", "/chat")
ACCEPTED_FORMS = (
    "a teacher URL takes one of these forms: "
    "https://<endpoint>.<region>.models.ai.azure.com[/v1][/chat/completions] (Azure AI serverless); "
    "https://<endpoint>.<region>.inference.ml.azure.com[/score | /v1/chat/completions] (an online endpoint); "
    "https://<resource>.openai.azure.com[/openai/deployments/<deployment>/chat/completions?api-version=<version>] "
    "(Azure OpenAI); an OpenAI-compatible base URL such as https://api.openai.com/v1 or "
    "http://localhost:8000[/v1][/chat/completions]")


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a teacher URL leads: the kind of endpoint (a TeacherKind value) and the URL to call."""

    kind: str
    url: str  # the request URL (its base URL is `base_url`); for Azure OpenAI, the resource's URL
    deployment: str | None = None  # Azure OpenAI: the deployment the URL named
    api_version: str | None = None  # Azure OpenAI: the API version the URL named


def kind_of(url: str) -> str:
    """The kind of endpoint a URL's host and path say it is."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if host.endswith(AZURE_OPENAI_HOSTS) or parts.path.startswith("/openai/deployments/"):
        return "azure_openai"
    return "azure_ai" if host.endswith(AZURE_AI_HOSTS) else "openai_compatible"


def place(url: str, kind: str) -> Placed:
    """The base URL for `url` on an endpoint of `kind`; ValueError (with the accepted forms) when it has none."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL; {ACCEPTED_FORMS}")
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"  # host names know no case
    path = parts.path.rstrip("/")
    query = dict(parse_qsl(parts.query))
    if kind == "azure_openai":
        return _azure_openai(origin, path, query)
    if query:
        raise ValueError(f"only an Azure OpenAI URL may carry a query string; {ACCEPTED_FORMS}")
    if path.startswith("/openai/deployments/"):
        raise ValueError("this is an Azure OpenAI deployment's URL, so the teacher's kind must be azure_openai (or "
                         f"leave the kind out); {ACCEPTED_FORMS}")
    if path.endswith(CHAT):
        return Placed(kind, origin + path)
    if kind == "azure_ai" and path == "/score":
        return Placed(kind, f"{origin}/v1{CHAT}")  # an online endpoint's chat route, beside its scoring route
    if path.endswith(_NOT_CHAT):
        raise ValueError(f"this is not a chat completions route; {ACCEPTED_FORMS}")
    return Placed(kind, origin + (path or "/v1") + CHAT)


def base_url_of(url: str) -> str:
    """The `openai` client's base URL for a placed request URL (or a base URL already)."""
    return url.removesuffix(CHAT)


def _azure_openai(origin: str, path: str, query: dict[str, str]) -> Placed:
    unknown = set(query) - {"api-version"}
    if unknown:
        raise ValueError(f"an Azure OpenAI URL carries no query but api-version; {ACCEPTED_FORMS}")
    if path in ("", "/openai"):
        return Placed("azure_openai", origin, api_version=query.get("api-version"))
    if match := _DEPLOYMENT.match(path):
        return Placed("azure_openai", origin, match[1], query.get("api-version"))
    raise ValueError(f"this is not an Azure OpenAI resource or chat deployment URL; {ACCEPTED_FORMS}")
