"""The adapter for an Azure OpenAI resource: the manifest's model is the deployment, the API version is in the URL,
a key goes in the `api-key` header, and Entra tokens are for Cognitive Services."""

from __future__ import annotations

from typing import Any

import openai

from shared.manifest.model import TeacherAuth
from shared.teacher.openai_compatible import NO_KEY, OpenAICompatibleTeacher

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


class AzureOpenAITeacher(OpenAICompatibleTeacher):
    entra_scope = COGNITIVE_SERVICES_SCOPE
    key_header = "api-key:"
    batch_url = "/chat/completions"

    @property
    def endpoint(self) -> str:
        s = self.settings
        return f"{self._url}/openai/deployments/{s.model}/chat/completions?api-version={s.api_version}"

    def _build_client(self, common: dict[str, Any]) -> openai.AsyncOpenAI:
        s = self.settings
        if s.effective_auth is TeacherAuth.ENTRA:
            common["azure_ad_token_provider"] = self._entra_token_provider()
        else:
            common["api_key"] = self._key() if s.effective_auth is TeacherAuth.KEY else NO_KEY
        return openai.AsyncAzureOpenAI(azure_endpoint=self._url, azure_deployment=s.model,
                                       api_version=s.api_version, **common)
