"""The evaluation step (in progress)."""

from __future__ import annotations

from typing import Any

from shared.services import Services


def on_evaluation(services: Services, body: dict[str, Any]) -> str | None:
    raise NotImplementedError
