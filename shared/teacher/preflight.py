"""One look at the teacher before a job fans out, so a dead endpoint or a missing key fails the job at once with one
clear reason instead of row by row after every retry.

The check reads the endpoint's model list (`GET …/models`), which costs no tokens. It fails only on what is certain:
the key or Entra token cannot be had, the endpoint cannot be reached (after a few quick tries), or it refuses the
credentials (401, 403). Any other answer, a missing model list included, lets the job go on: many endpoints do not
list their models, and a 429 or a 5xx says the endpoint is there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import openai

from shared.manifest.model import InferenceParameters, TeacherSettings
from shared.teacher.factory import adapter_for
from shared.teacher.replies import TeacherConfigError

ATTEMPTS = 3  # tries to reach the endpoint: a blip does not fail a job
ATTEMPT_TIMEOUT = 8.0  # seconds per try; a closed port answers at once, a black hole takes this long
PAUSE = 2.0  # seconds between tries


async def teacher_problem(settings: TeacherSettings, inference: InferenceParameters, *,
                          environ: Mapping[str, str] = os.environ, local_url: str | None = None) -> str | None:
    """Why this teacher cannot answer the job, or None when it may."""
    try:
        adapter = adapter_for(settings, inference, environ=environ, local_url=local_url)
        client = adapter.openai_client().with_options(timeout=ATTEMPT_TIMEOUT)
    except TeacherConfigError as err:
        return str(err)
    where = adapter.base_url
    try:
        for attempt in range(ATTEMPTS):
            try:
                await client.models.list()
                return None
            except (openai.APIConnectionError, openai.APITimeoutError) as err:
                if attempt + 1 == ATTEMPTS:
                    cause = type(err.__cause__).__name__ if err.__cause__ else type(err).__name__
                    return f"the teacher at {where} cannot be reached ({cause}, {ATTEMPTS} tries)"
                await asyncio.sleep(PAUSE)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                return f"the teacher at {where} refused the credentials (HTTP {err.status_code})"
            except openai.APIStatusError:
                return None  # it answered: the endpoint is there, whether or not it lists its models
            except TeacherConfigError as err:  # no Entra token
                return str(err)
        return None
    finally:
        await adapter.aclose()
