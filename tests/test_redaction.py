"""Configured secrets are found in the settings and redacted from log records, stored documents and shard results."""

from __future__ import annotations

import logging
import uuid

import pytest

from shared import redaction
from shared.jobs.blobs import dumps
from shared.jobs.shards import ResultHeader, RowResult, encode_result
from shared.reasons import Reason
from shared.tasks.base import Rejected


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def test_secrets_are_the_settings_named_as_secrets_and_the_key_parts_of_connection_strings() -> None:
    account, bus, key, sig = fresh("acct"), fresh("bus"), fresh("sk-"), fresh("sig")
    environ = {
        "DistillStorage": f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={account};EndpointSuffix=x",
        "DistillServiceBus": f"Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey={bus}",
        "TEACHER_API_KEY": key,
        "DATA_URL": f"https://a.blob.core.windows.net/c/f.jsonl?sv=2022-11-02&sig={sig}",
        "DISTILL_TEACHER_KEY_SETTING": "TEACHER_API_KEY",  # the name of a setting, not a secret
        "SHORT_TOKEN": "abc",  # too short to be told from ordinary text
        "PATH": "/usr/bin:/bin",
    }
    assert redaction.secrets_in(environ) == {account, bus, key, sig}


def test_log_records_lose_every_secret_in_message_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    key = fresh("sk-")
    redaction.install({"MY_TEACHER_KEY": key})
    log = logging.getLogger("distill.redaction-test")
    caplog.set_level(logging.INFO)
    log.info("calling with %s", key)
    try:
        raise RuntimeError(f"refused {key}")
    except RuntimeError:
        log.exception("the call failed")
    text = caplog.text + "".join(caplog.handler.format(r) for r in caplog.records)
    assert key not in text and text.count(redaction.REDACTED) >= 3


def test_stored_documents_and_shard_results_lose_every_secret() -> None:
    key = fresh("sk-")
    redaction.remember(key)
    assert key not in dumps({"errors": [f"fine-tune failed: HTTP 401 for key {key}"]}).decode()
    row = RowResult("r1", "train", "train.jsonl", 1, 0, None, Rejected(Reason.REFUSED, f"echoed {key}", ""))
    assert key not in encode_result(ResultHeader(shard=0), [row]).decode()
    assert redaction.redact(f"a {key} b") == f"a {redaction.REDACTED} b"
