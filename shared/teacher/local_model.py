"""The adapter for the local model: `distill run` serves it on this machine as an OpenAI-compatible endpoint
(shared.local.model_server, `transformers serve`) and gives its address to the pipeline (`Services.local_teacher_url`).
Nowhere else is there a model to reach: in Azure, a manifest with a local teacher fails with this reason.

A local server serves one model, under its own name (`transformers serve` uses the model's folder path): requests are
sent under the name the server lists, while their bodies (what `distill preview` shows and the response cache keys)
keep the manifest's model name. A server that does not cut replies at stop strings has them cut here, as an OpenAI
endpoint would.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import replace

import openai

from shared.manifest.model import InferenceParameters, TeacherSettings
from shared.teacher.openai_compatible import OpenAICompatibleTeacher
from shared.teacher.replies import Failure, TeacherConfigError, TeacherReply


class LocalModelTeacher(OpenAICompatibleTeacher):
    def __init__(self, settings: TeacherSettings, inference: InferenceParameters, url: str | None, *,
                 environ: Mapping[str, str] = os.environ) -> None:
        if not url:
            raise TeacherConfigError("teacher.kind local: no model is served here; `distill run` serves one on this "
                                     "machine, and a deployed app needs a teacher endpoint (teacher.url)")
        super().__init__(settings, inference, url, environ=environ)
        self._served: str | None = None
        self._lock: asyncio.Lock | None = None

    async def attempt(self, body: dict) -> TeacherReply | Failure:
        served = await self.served_model()
        reply = await super().attempt({**body, "model": served})
        return cut_at_stop(reply, body.get("stop")) if isinstance(reply, TeacherReply) else reply

    async def served_model(self) -> str:
        """The name the server lists its model under; the manifest's name if it lists none (asked once)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._served is None:
                try:
                    listed = [model.id async for model in self.openai_client().models.list()]
                except openai.OpenAIError:
                    return self.settings.model  # the chat request itself will say what is wrong with the server
                self._served = listed[0] if len(listed) == 1 else self.settings.model
        return self._served


def cut_at_stop(reply: TeacherReply, stop: list[str] | None) -> TeacherReply:
    """The reply up to its first stop string, finished "stop", as an OpenAI endpoint returns it."""
    cuts = [at for at in (reply.content.find(s) for s in stop or ()) if at >= 0] if reply.content else []
    return replace(reply, content=reply.content[: min(cuts)], finish_reason="stop") if cuts else reply
