"""Secrets the app is configured with are never stored or logged: wherever one appears, `***` is written instead.

The secrets are the values of settings named as secrets (`*_KEY`, `*_SECRET`, `*_TOKEN`, `*_PASSWORD`), the key parts
of connection strings (`AccountKey=`, `SharedAccessKey=`, `SharedAccessSignature=`, a SAS `sig=`) in any setting, and
every teacher key as it is read (`remember`). `install` collects them from the environment and makes every log record
redacted; the JSON documents and shard results a job writes, and the teacher's replies, are redacted as they are made.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import traceback
from collections.abc import Mapping

REDACTED = "***"
MIN_CHARS = 8  # shorter values are not treated as secrets: replacing them would garble ordinary text
_SECRET_NAME = re.compile(r"(?:^|_)(?:API_?KEY|KEY|SECRET|TOKEN|PASSWORD)$", re.IGNORECASE)
_KEY_PART = re.compile(r"(?:AccountKey|SharedAccessKey|SharedAccessSignature|(?<=[?&])sig)=([^;&\s]+)",
                       re.IGNORECASE)

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def remember(secret: str | None) -> None:
    """Redact this value from now on (a key read for a call)."""
    if secret and len(secret) >= MIN_CHARS and secret not in _secrets:
        with _lock:
            _secrets.add(secret)


def secrets_in(environ: Mapping[str, str]) -> set[str]:
    """The secret values among settings: those named as secrets, and the key parts of connection strings."""
    found = {value for name, value in environ.items() if _SECRET_NAME.search(name)}
    found.update(part for value in environ.values() for part in _KEY_PART.findall(value))
    return {value for value in found if len(value) >= MIN_CHARS}


def redact(text: str) -> str:
    """`text` with every known secret replaced, longest first (a key inside a connection string goes either way)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def install(environ: Mapping[str, str]) -> None:
    """Remember the environment's secrets and redact every log record from here on (once per process)."""
    global _installed
    for secret in secrets_in(environ):
        remember(secret)
    with _lock:
        if _installed:
            return
        _installed = True
        make = logging.getLogRecordFactory()

    def redacted_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if _secrets:
            with contextlib.suppress(TypeError, ValueError):  # arguments that do not fit: logging reports those
                record.msg, record.args = redact(record.getMessage()), ()
            if record.exc_info and not record.exc_text:
                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(redacted_record)
