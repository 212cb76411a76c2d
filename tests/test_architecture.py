"""The layout's rules, computed from the source: no import cycles, a light Azure app that never reaches local-only
code, and one name per pipeline step from trigger to docs."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "functions", "bench")
# Never part of the Functions deployment package (.funcignore): the app must not import them, even lazily.
LOCAL_ONLY = ("shared.local", "shared.testkit", "shared.cli")
HEAVY = ("torch", "transformers", "trl", "peft", "azure.ai.ml", "matplotlib", "openai")  # openai: by the first shard


def project_modules() -> dict[str, Path]:
    """Module name → file, for function_app and every module of the project's packages."""
    modules = {"function_app": ROOT / "function_app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, those inside functions too, but not those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules a module's import statements name; `from pkg import x` names `pkg` (and `pkg.x` when
    that is a module)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names)
    return found & known


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(name, path, set(modules)) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nfrom shared import ports\n"
              "if TYPE_CHECKING:\n    from shared import settings\n"
              "def f():\n    from shared.jobs import paths\n")
    module = tmp_path / "probe.py"
    module.write_text(source)
    names = imported("probe", module, {"shared", "shared.ports", "shared.settings", "shared.jobs", "shared.jobs.paths"})
    assert names == {"shared", "shared.ports", "shared.jobs", "shared.jobs.paths"}


LAYERS = [  # top to bottom, as docs/architecture.md draws them
    ("function_app", "functions", "shared.cli", "shared.local", "shared.testkit", "bench"),
    ("shared.pipeline", "shared.services"),
    ("shared.storage", "shared.queueing", "shared.teacher", "shared.finetune", "shared.publishing", "shared.students",
     "shared.dashboard"),
    ("shared.tasks", "shared.manifest", "shared.jobs", "shared.validation", "shared.prompts", "shared.parsing",
     "shared.assembly", "shared.rows", "shared.reasons", "shared.identity", "shared.evaluation", "shared.rouge",
     "shared.report", "shared.consensus"),
    ("shared", "shared.ports", "shared.settings", "shared.joblog", "shared.tracing", "shared.redaction"),
]


def layer_of(module: str) -> int:
    if module == "shared":  # the package itself: a docstring
        return len(LAYERS) - 1
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes if p != "shared"):
            return index
    raise AssertionError(f"{module} is in no layer: place it in LAYERS and in docs/architecture.md")


def test_each_layer_imports_only_from_itself_and_the_layers_below() -> None:
    """The domain knows nothing of adapters or the pipeline; adapters nothing of the pipeline or the local mode."""
    graph = import_graph()
    upward = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps) if layer_of(d) < layer_of(m)]
    assert upward == []


def test_the_app_never_reaches_local_only_code() -> None:
    """Counting lazy imports: what the app could ever import is in the deployment package."""
    graph = import_graph()
    assert set(graph) >= {"shared.local.runtime", "shared.testkit.teacher", "shared.cli"}
    reached = reachable(graph, "function_app")
    assert sorted(m for m in reached if m.startswith(LOCAL_ONLY)) == []


def test_local_only_code_is_left_out_of_the_deployment_package() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert {name.replace(".", "/") for name in LOCAL_ONLY} <= ignored


def test_importing_the_app_loads_nothing_heavy_or_local() -> None:
    code = "import json, sys, function_app; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                                       text=True).stdout)
    assert "shared.pipeline.ingest" in loaded  # the probe did import the app
    assert [m for m in loaded if m.startswith(LOCAL_ONLY) or m.split(".")[0] in HEAVY
            or m.startswith("azure.ai.ml")] == []


def test_each_trigger_module_names_its_pipeline_step() -> None:
    """functions/X.py turns its trigger into a call into shared/pipeline/X.py: one name from trigger to step."""
    triggers = {p.stem for p in (ROOT / "functions").glob("*.py") if p.stem != "__init__"}
    for name in triggers:
        assert f"shared.pipeline.{name}" in import_graph()[f"functions.{name}"], name


TASK_MEMBER = re.compile(r"\bTask\.(?!parse\b|rules\b)[A-Z_]+\b")


def test_only_the_task_modules_name_a_task() -> None:
    """A rule about one task type lives in its module under shared/tasks/, never in a branch elsewhere."""
    offenders = [f"{path.relative_to(ROOT)}:{number}" for name, path in project_modules().items()
                 if name.startswith("shared") and not name.startswith("shared.tasks")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if TASK_MEMBER.search(line)]
    assert offenders == []


def test_the_repository_cites_no_document_outside_it() -> None:
    """Every `*.md` a file names is a file of the repository, or a report a job writes: the repository stands on its
    own."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    names = {Path(p).name for p in tracked} | {"report.md"}
    cited = {(path, name) for path in tracked if Path(path).suffix in (".py", ".md", ".bicep", ".yaml", ".toml", "")
             and (ROOT / path).is_file()
             for name in re.findall(r"([\w.-]+\.md)\b", (ROOT / path).read_text(errors="replace"))}
    assert [f"{path}: {name}" for path, name in sorted(cited) if name not in names] == []


def test_the_readme_layout_table_matches_the_tree() -> None:
    """Every path the README's layout table names exists, and every top-level entry and every module or package of
    `shared/` is named there."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = {span.rstrip("/") for row in table.splitlines() if row.startswith("| `")
             for span in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert [p for p in sorted(named) if not (ROOT / p).exists()] == []
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    top = {p.split("/")[0] for p in tracked if not p.startswith(".")} - {"README.md"}
    inside = {"/".join(p.split("/")[:2]).removesuffix("/__init__.py") for p in tracked
              if p.startswith("shared/") and p != "shared/__init__.py"}
    covered = {entry for entry in top | inside for name in named if name == entry or name.startswith(f"{entry}/")}
    assert sorted((top | inside) - covered - {"shared"}) == []
