"""Reading manifest files: a native manifest (YAML or JSON) or an AzureML `type: distillation` job YAML, into one
validated `Manifest` (shared.manifest.model), with data paths resolved against the manifest's folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.manifest import azureml
from shared.manifest.model import Loc, Manifest, ManifestError, Rename, dotted, located, same_path, validated
from shared.manifest.secrets import NATIVE_KEY_ADVICE, find_secrets
from shared.ports import BlobStore


def load_manifest(path: Path, *, check_files: bool = False) -> Manifest:
    """Read a manifest file (YAML or JSON, UTF-8): native, or an AzureML `type: distillation` job YAML.

    Relative data paths are resolved against the manifest's folder; with `check_files` each must be a readable file
    here (or an AzureML data asset), and a problem names the field that gave it. Raises ManifestError.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        problem = f"cannot read the file ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start})"
    else:
        return manifest_from_text(text, path.resolve().parent, str(path), is_json=path.suffix.lower() == ".json",
                                  check_files=check_files)
    raise ManifestError([located(str(path), "", problem)])


def manifest_from_text(text: str, base: Path, source: str, *, is_json: bool = False,
                       check_files: bool = False) -> Manifest:
    """A manifest from its YAML or JSON text (JSON when `is_json` or it starts with `{`). Raises ManifestError."""
    if not text.strip():
        raise ManifestError([located(source, "", "the file is empty")])
    is_json = is_json or text.lstrip().startswith("{")
    doc = _parse_json(text, source) if is_json else _parse_yaml(text, source)
    return manifest_from_dict(doc, base, source=source, check_files=check_files)


def manifest_from_dict(doc: Any, base: Path, source: str = "manifest", *, check_files: bool = False) -> Manifest:
    """Validate a manifest already parsed into a dict; relative data paths are resolved against `base` (and, with
    `check_files`, must name readable files here)."""
    if not isinstance(doc, dict):
        raise ManifestError([located(source, "", "must be a mapping of fields")])
    rename: Rename = same_path
    if azureml.is_azureml(doc):
        doc, rename = azureml.from_azureml(doc, source=source), azureml.azure_path
    elif secrets := find_secrets(doc, NATIVE_KEY_ADVICE):
        raise ManifestError([located(source, "", p) for p in secrets])
    doc, path_problems = _resolve_data_paths(doc, Path(base), check_files)
    manifest, problems = validated(doc, rename)
    problems = [(rename(dotted(loc)), msg) for loc, msg in path_problems] + problems
    if problems or manifest is None:
        raise ManifestError([located(source, path, msg) for path, msg in problems])
    return manifest


def is_data_asset(path: Path | str | None) -> bool:
    """An AzureML data asset reference (`azureml:<name>:<version>`): remote, never resolved or read here."""
    return path is not None and str(path).startswith("azureml:")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def unreadable(path: Path) -> str | None:
    """Why a data file cannot be read here, or None when it can: missing, a folder, or an AzureML data asset."""
    if is_data_asset(path):
        name, _, version = str(path).removeprefix("azureml:").partition(":")
        return (f"an AzureML data asset, which is read only in AzureML: download it (az ml data download --name "
                f"{name} --version {version or '<version>'}) and give the file")
    if path.is_dir():
        return "a folder, not a JSONL file"
    if not path.is_file():
        return "no such file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _resolve_data_paths(doc: dict, base: Path, check_files: bool) -> tuple[dict, list[tuple[Loc, str]]]:
    """A copy of `doc` whose relative data paths are absolute under `base`, and the problems found."""
    doc, problems = dict(doc), []
    for field in ("training_file", "validation_file"):
        value = doc.get(field)
        if not isinstance(value, str | os.PathLike):
            continue
        text = os.fspath(value)
        if not text.strip():
            problems.append(((field,), "must not be empty"))
        elif _URL.match(text):
            problems.append(((field,), "a URL is not read; give a local file, or an AzureML data asset as "
                                       "`azureml:<name>:<version>`"))
        else:
            if not is_data_asset(text):
                local = Path(text).expanduser()
                doc[field] = local if local.is_absolute() else (base / local).resolve()
            if check_files and (why := unreadable(Path(doc[field]))):
                problems.append(((field,), f"{text}: {why}"))
    return doc, problems


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        problem = f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
    except _DuplicateField as exc:
        problem = f"{source}: invalid JSON: duplicate field `{exc.name}`"
    raise ManifestError([problem])


class _DuplicateField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateField(key)
        result[key] = value
    return result


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = f"{where}: invalid YAML: {exc.problem or 'cannot be parsed'}"
    except yaml.YAMLError:
        problem = f"{source}: invalid YAML: unreadable characters"
    raise ManifestError([problem])


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a field written twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader itself reports an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate field `{key}`",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def stored_manifest(store: BlobStore, paths: JobPaths) -> Manifest:
    """The manifest ingest stored with the job (`jobs/<job>/manifest.json`), validated."""
    return Manifest.model_validate(read_json(store, paths.manifest))
