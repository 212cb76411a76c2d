"""Events POSTed to webhooks, one per request in CloudEvents' structured mode (`application/cloudevents+json`).

Each delivery is tried a few times, briefly. A webhook that still fails is left alone for `down_seconds`: the events
meant for it meanwhile count as missed at once, so a receiver that is down never fails or stalls a job; what it missed
is reported in the job's status (`events_missed`) and kept in the job's `events.jsonl`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SETTING = "DISTILL_EVENT_WEBHOOKS"  # comma-separated URLs


class WebhookPublisher:
    """`shared.ports.EventPublisher` for a list of webhook URLs."""

    def __init__(self, urls: Sequence[str], *, tries: int = 3, timeout: float = 2.0, pause: float = 0.2,
                 down_seconds: float = 10.0) -> None:
        self.urls = list(urls)
        self.tries, self.timeout, self.pause, self.down_seconds = tries, timeout, pause, down_seconds
        self._down_until: dict[str, float] = {}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> WebhookPublisher | None:
        urls = [url.strip() for url in environ.get(SETTING, "").split(",") if url.strip()]
        return cls(urls) if urls else None

    def publish(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        missed = []
        for event in events:
            for url in self.urls:
                if self._down_until.get(url, 0.0) > time.monotonic():
                    error = "not tried: the webhook failed a moment ago"
                elif error := self._deliver(url, event):
                    self._down_until[url] = time.monotonic() + self.down_seconds
                if error:
                    missed.append({"id": str(event["id"]), "to": shown(url), "error": error})
        return missed

    def _deliver(self, url: str, event: Mapping[str, Any]) -> str | None:
        """POST one event, with retries; None when it was taken, else why not."""
        body = json.dumps(event, ensure_ascii=False).encode("utf-8")
        error = ""
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.pause * attempt)
            request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": CONTENT_TYPE})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                return None
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # refused for good: trying again would not help
            except (OSError, ValueError) as exc:  # refused, unreachable, timed out, not a URL
                error = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        return f"{error} after {attempt + 1} tries"


def shown(url: str) -> str:
    """A webhook URL as reported: without user, password or query, which may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
