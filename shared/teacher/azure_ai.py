"""The adapter for an Azure AI endpoint: a serverless one (`*.models.ai.azure.com`, Llama 3.1 405B, ...) or a managed
online one (`*.inference.ml.azure.com`). Both speak OpenAI's chat completions under `/v1`; Entra tokens are for
Azure Machine Learning."""

from __future__ import annotations

from shared.teacher.openai_compatible import OpenAICompatibleTeacher


class AzureAITeacher(OpenAICompatibleTeacher):
    @property
    def base_url(self) -> str:
        return self._url if self._url.endswith("/v1") else f"{self._url}/v1"
