"""What the test teacher's HTTP handler does with one request, and its OpenAI-shaped error bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Response:
    """What the handler does with one request."""

    status: int = 200
    payload: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    action: Literal["send", "reset", "drop"] = "send"
    raw: bytes | None = None  # sent as is instead of the JSON payload (file contents)


def error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    payload = {"error": {"message": message, "type": code, "param": None, "code": code}}
    return Response(status=status, payload=payload, headers=headers or {})
