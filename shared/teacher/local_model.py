"""The adapter for the local model: `distill run` serves it on this machine as an OpenAI-compatible endpoint
(shared.local.model_server) and gives its address to the pipeline (`Services.local_teacher_url`). Nowhere else is
there a model to reach: in Azure, a manifest with a local teacher fails with this reason."""

from __future__ import annotations

import os
from collections.abc import Mapping

from shared.manifest.model import InferenceParameters, TeacherSettings
from shared.teacher.openai_compatible import OpenAICompatibleTeacher
from shared.teacher.replies import TeacherConfigError


class LocalModelTeacher(OpenAICompatibleTeacher):
    def __init__(self, settings: TeacherSettings, inference: InferenceParameters, url: str | None, *,
                 environ: Mapping[str, str] = os.environ) -> None:
        if not url:
            raise TeacherConfigError("teacher.kind local: no model is served here; `distill run` serves one on this "
                                     "machine, and a deployed app needs a teacher endpoint (teacher.url)")
        super().__init__(settings, inference, url, environ=environ)
