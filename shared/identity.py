"""Job identity: a job's id follows from what determines its results (data, task, teacher, prompts, student)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shared.manifest.model import Manifest
from shared.prompts import PROMPT_VERSION

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(manifest: Manifest, data_digests: list[str]) -> dict[str, object]:
    """Everything a job's results depend on; budget, rate limits and output options are left out on purpose."""
    return {
        "task": manifest.task.value,
        "data": data_digests,
        "validation_fraction": None if manifest.validation_file else manifest.validation_fraction,
        "teacher": {"kind": manifest.teacher.kind.value, "url": manifest.teacher.url, "model": manifest.teacher.model},
        "inference": manifest.inference.model_dump(mode="json"),
        "prompt_version": PROMPT_VERSION,
        "prompt": manifest.prompt.model_dump(mode="json", exclude={"samples"} if manifest.prompt.samples == 1
                                             else None),  # one sample: the ids of jobs from before samples stay
        "student": manifest.student.model_dump(mode="json"),
        # the quality gates, only when set: the ids of jobs without them stay as they were
        **({"min_agreement": manifest.min_agreement} if manifest.min_agreement is not None else {}),
        **({"drop_disagreeing": True} if manifest.drop_disagreeing else {}),
    }


def job_id(manifest: Manifest, data_digests: list[str]) -> str:
    """`manifest.name` when set, else `<task>-<12 hex digits of the fingerprint>`."""
    if manifest.name:
        return manifest.name
    blob = json.dumps(fingerprint(manifest, data_digests), sort_keys=True, separators=(",", ":"))
    return f"{manifest.task.value.lower().replace('_', '-')}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
