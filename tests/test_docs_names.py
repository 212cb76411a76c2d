"""Every `distill` command and option and every app setting the docs name exists: in the CLI's parser, the code or
`infra/`. Docs are README.md and docs/*.md; names are read from inline code and code blocks."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from shared.cli import parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


SETTING = re.compile(r"\b(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Za-z][A-Za-z0-9]*__[A-Za-z][A-Za-z0-9]*)\b")
COMMAND = re.compile(r"(?:^|[\s/])distill\s+([a-z][\w-]*)(.*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def code_spans(text: str) -> list[str]:
    """Inline code, and each line of a code block (a line ending in `\\` joined to the next).

    An inline option alone (`--no-deps`) counts only on a line that speaks of distill: others belong to other tools.
    """
    spans: list[str] = []
    for i, part in enumerate(re.split(r"^```[^\n]*\n", text, flags=re.M)):
        if i % 2:  # inside a fenced block
            spans += part.replace("\\\n", " ").splitlines()
            continue
        for line in part.splitlines():
            spans += [s for s in re.findall(r"``?([^`\n]+)``?", line)
                      if not s.lstrip().startswith("--") or re.search(r"\bdistill\b", line)]
    return spans


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def options_of(p: argparse.ArgumentParser) -> set[str]:
    """The option strings of a parser and of its nested sub-commands (`distill teacher serve --port`)."""
    found = {o for a in p._actions for o in a.option_strings}
    for child in subparsers(p).values():
        found |= options_of(child)
    return found


def cli_problems(spans: list[str], where: str) -> list[str]:
    commands = subparsers(parser())
    every_option = set().union(*(options_of(c) for c in commands.values()))
    problems = []
    for span in spans:
        m = COMMAND.search(span)
        if m:
            name, rest = m.group(1), re.split(r"\||&&|;", m.group(2))[0]
            if name not in commands:
                problems.append(f"{where}: `distill {name}` is not a command")
                continue
            known = options_of(commands[name]) | {"-h", "--help"}
            problems += [f"{where}: `distill {name}` has no option {o}" for o in OPTION.findall(rest)
                         if o not in known]
        elif span.lstrip().startswith("--"):
            problems += [f"{where}: no distill command has the option {o}" for o in OPTION.findall(span)[:1]
                         if o not in every_option]
    return problems


def project_text() -> str:
    """The code, infra and test suite (its own switches, such as DISTILL_UPDATE_FIGURES) a setting may come from."""
    files = [ROOT / "function_app.py", ROOT / "host.json", ROOT / "azure.yaml", *ROOT.glob("shared/**/*.py"),
             *ROOT.glob("functions/*.py"), *(p for p in ROOT.glob("tests/**/*.py") if p.name != Path(__file__).name),
             *(p for p in (ROOT / "infra").rglob("*") if p.is_file())]
    return "\n".join(p.read_text() for p in files)


def setting_problems(spans: list[str], known: str, where: str) -> list[str]:
    names = {n for span in spans for n in SETTING.findall(span)}
    return [f"{where}: {n} is named but exists in neither the code nor infra/" for n in sorted(names)
            if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", known)]


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_command_option_and_setting_the_docs_name_exists(doc: Path) -> None:
    spans = code_spans(doc.read_text())
    where = str(doc.relative_to(ROOT))
    assert cli_problems(spans, where) + setting_problems(spans, project_text(), where) == []


def test_the_docs_are_read() -> None:
    """The reading finds what the docs certainly name (so an empty reading cannot pass)."""
    spans = code_spans((ROOT / "docs" / "deploy.md").read_text())
    assert any(COMMAND.search(s) for s in spans)
    assert {"DistillStorage__serviceUri", "TEACHER_API_KEY"} <= {n for s in spans for n in SETTING.findall(s)}


def test_a_wrong_name_is_reported() -> None:
    spans = code_spans("Run `distill runn job.yaml`, then `distill run --teacher-urls X`,\n"
                       "```sh\ndistill validate \\\n  --tusk nli f.jsonl\n```\n"
                       "with `DISTILL_SHARD_ROWZ` and `Distill__x`.")
    assert cli_problems(spans, "doc") == ["doc: `distill runn` is not a command",
                                          "doc: `distill run` has no option --teacher-urls",
                                          "doc: `distill validate` has no option --tusk"]
    assert setting_problems(spans, project_text(), "doc") == [
        "doc: DISTILL_SHARD_ROWZ is named but exists in neither the code nor infra/",
        "doc: Distill__x is named but exists in neither the code nor infra/"]

