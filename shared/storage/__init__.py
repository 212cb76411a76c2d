"""Blob stores: `local.LocalBlobStore` (a folder) and `azure_blob.AzureBlobStore` (Azure Blob Storage).

Both refuse the same paths, through `check_blob_path`, so a path that works locally works on Azure and the reverse.
This module stays light: it imports neither store.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

# Azure's rule: 3-63 lower-case letters, digits and hyphens, starting and ending with a letter or digit, no "--".
CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
MAX_NAME_LENGTH = 1024  # Azure's limit on a blob's name (the part after the container)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_container_name(name: str) -> bool:
    """Whether `name` is a valid Azure container name."""
    return CONTAINER_NAME.fullmatch(name) is not None


def _structural_problem(path: str) -> str | None:
    """Why `path`, taken literally, is not a safe `<container>/<name>` path, or None."""
    if path.startswith("/"):
        return "it is absolute"
    if "\\" in path:
        return "backslashes are not allowed"
    if _CONTROL.search(path):
        return "control characters (NUL included) are not allowed"
    container, _, name = path.partition("/")
    segments = path.split("/")
    if len(segments) < 2:
        return "it needs the form <container>/<name>"
    if "" in segments:
        return "empty segments ('//', a leading or a trailing '/') are not allowed"
    if any(segment in (".", "..") for segment in segments):
        return "'.' and '..' segments are not allowed"
    if any(segment.endswith(".") for segment in segments):
        return "a segment may not end with '.' (Azure drops trailing dots)"
    if not is_container_name(container):
        return f"{container!r} is not a container name (3-63 lower-case letters, digits and single inner hyphens)"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is longer than {MAX_NAME_LENGTH} characters"
    return None


def _problem(path: str) -> str | None:
    """Why `path` is refused, checking it as written and as every percent-decoding of it would read."""
    problem = _structural_problem(path)
    decoded = path
    while problem is None and (step := unquote(decoded)) != decoded:
        decoded = step
        if decoded.count("/") != path.count("/"):
            return "a percent-encoded '/' (%2f) is not allowed"
        if (inner := _structural_problem(decoded)) is not None:
            return f"percent-decoded it reads {decoded!r}, where {inner}"
    return problem


def is_blob_path(path: str) -> bool:
    """Whether `check_blob_path` accepts `path`."""
    return _problem(path) is None


def check_blob_path(path: str) -> str:
    """Return `path` unchanged when it is a safe `<container>/<name>` blob path; raise ValueError otherwise."""
    problem = _problem(path)
    if problem is not None:
        raise ValueError(f"refused blob path {path!r}: {problem}")
    return path


def check_folder(prefix: str) -> str:
    """Return `prefix` unchanged when it names a folder (a container, or a safe path ending in '/'); raise ValueError
    otherwise."""
    folder = prefix.rstrip("/")
    if not (is_container_name(folder) or ("/" in folder and prefix.endswith("/") and is_blob_path(folder))):
        raise ValueError(f"refused folder {prefix!r}: give a container, or a blob path ending in '/'")
    return prefix


def check_conditions(if_match: str | None, if_absent: bool) -> None:
    """Refuse the two write conditions together: a blob cannot both exist with an ETag and not exist."""
    if if_match is not None and if_absent:
        raise ValueError("if_match and if_absent exclude each other")


@contextmanager
def replacing(dest: Path) -> Iterator[BinaryIO]:
    """A file to write that takes `dest`'s place only once complete, so `dest` is never half-written."""
    part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        with part.open("xb") as out:
            yield out
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
