"""The evaluation report: loss curves read defensively, the table, the files, and a real run with SmolLM2-135M."""

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_evaluation import answers_of, nli_sample, run_job

from shared.evaluation import EvalItem
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.local.models import STUDENT
from shared.local.report import (
    Curve,
    build_report,
    chart,
    evaluate_job,
    format_table,
    loss_curves,
    write_report,
)
from shared.manifest.model import Manifest
from shared.storage.local import LocalBlobStore
from shared.tasks import Task

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("metrics", [
    {"train": [{"step": 2, "loss": 1.5}, {"step": 1, "loss": 2.0}], "eval": [{"epoch": 1, "loss": 1.2}]},
    {"train_loss": [[1, 2.0], [2, 1.5]], "eval_loss": [{"epoch": 1.0, "eval_loss": 1.2}], "seconds": 3},
    [{"loss": 2.0, "step": 1}, {"loss": 1.5, "step": 2}, {"eval_loss": 1.2, "epoch": 1}, {"train_runtime": 9}],
    {"log_history": [{"loss": 2.0, "step": 1}, {"loss": 1.5, "step": 2}, {"eval_loss": 1.2, "epoch": 1.0}]},
])
def test_loss_curves_accept_the_usual_shapes(metrics: object) -> None:
    assert loss_curves(metrics) == [Curve("train", "step", [(1.0, 2.0), (2.0, 1.5)]),
                                    Curve("eval", "epoch", [(1.0, 1.2)])]


def test_the_local_trainers_metrics_plot_against_steps() -> None:
    metrics = {"train": [{"step": 5, "epoch": 0.5, "loss": 2.0}], "eval": [{"step": 10, "epoch": None, "loss": 1.0}],
               "method": "full", "steps": 10}
    assert loss_curves(metrics) == [Curve("train", "step", [(5.0, 2.0)]), Curve("eval", "step", [(10.0, 1.0)])]


@pytest.mark.parametrize("metrics", [None, {}, [], "loss", 3, {"train": "x"}, [{"loss": "nan"}, [1], {"step": 1}],
                                     {"train": [{"step": True, "loss": 1.0}, {"step": 1, "loss": float("inf")}]}])
def test_loss_curves_ignore_what_they_cannot_read(metrics: object) -> None:
    assert loss_curves(metrics) == []


def items(*answers: str | None) -> list[EvalItem]:
    messages = ({"role": "user", "content": "Premise: a. Hypothesis: b."},)
    return [EvalItem(f"id{n}", messages, "entailment", answer) for n, answer in enumerate(answers)]


def nli_report(answers: dict[str, list[str | None]], mode: str = "reference") -> dict:
    manifest = Manifest(task=Task.NLI, training_file=Path("train.jsonl"))
    models = {"teacher": "t", "base": "b", "distilled": None}
    report = build_report("job1", manifest, mode, items("entailment", None), answers, models)
    return report | {"timings": {"base_seconds": 1.0, "total_seconds": 1.5}}


def test_the_teacher_scores_zero_on_rows_it_failed_and_a_model_not_run_has_no_score() -> None:
    report = nli_report({"teacher": ["entailment", None], "base": ["Entailment.", "neutral"]})
    assert report["scores"] == {"teacher": 0.5, "base": 0.5, "distilled": None}
    assert report["examples"]["base"][0] == {"id": "id0", "question": "Premise: a. Hypothesis: b.",
                                             "target": "entailment", "answer": "Entailment.", "score": 1.0}
    assert format_table(report) == ("model               accuracy     n\n"
                                    "teacher                50.0%     2\n"
                                    "base student           50.0%     2\n"
                                    "distilled student    not run     -")


def test_the_chart_is_a_png_with_or_without_loss_curves() -> None:
    report = nli_report({"teacher": ["entailment", None], "base": ["x", "y"]})
    curves = [Curve("train", "step", [(1.0, 2.0), (2.0, 1.0)]), Curve("eval", "epoch", [(1.0, 1.5)])]
    assert chart(report, curves).startswith(PNG)
    assert chart(report, []).startswith(PNG)


def test_an_unreadable_metrics_file_leaves_the_loss_curves_out(tmp_path: Path) -> None:
    store, paths = LocalBlobStore(tmp_path), JobPaths("jobs", "job1")
    store.write(paths.file("finetune/metrics.json"), b"{not json")
    write_report(store, paths, nli_report({"teacher": ["entailment", "entailment"]}))
    markdown = store.read(paths.file("report.md")).data.decode("utf-8")
    assert "![Scores](report.png)" in markdown
    assert "| distilled student | not run | - |" in markdown
    assert store.read(paths.file("report.png")).data.startswith(PNG)


# --- a real evaluation: the test teacher's job, SmolLM2-135M as base and "distilled" student ------------------
@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """$DISTILL_MODEL_CACHE if set (the converted model is reused), else a fresh folder."""
    if importlib.util.find_spec(STUDENT.parts[0][0]) is None:
        pytest.skip(f"{STUDENT.name} is not installed: {STUDENT.install}")
    pytest.importorskip("transformers")
    cache = os.environ.get("DISTILL_MODEL_CACHE") or str(tmp_path_factory.mktemp("models"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILL_MODEL_CACHE", cache)
        yield


def test_evaluate_job_scores_three_models_and_writes_the_report(tmp_path: Path, model_cache: None) -> None:
    files = nli_sample(tmp_path / "sample")
    job = run_job(tmp_path, files, answers_of(files))
    metrics = {"train": [{"step": 1, "loss": 2.1}, {"step": 2, "loss": 1.4}], "eval": [{"epoch": 1, "loss": 1.6}]}
    job.store.write(job.paths.file("finetune/metrics.json"), dumps(metrics))

    report = evaluate_job(job.store, job.paths, job.manifest, base_model=STUDENT.name, distilled_model=STUDENT.name,
                          max_items=8)

    assert (report["task"], report["mode"], report["metric"], report["n"]) == ("NLI", "reference", "accuracy", 8)
    assert report["scores"]["teacher"] == 1.0  # the test teacher gives the reference answers
    assert 0.0 <= report["scores"]["base"] <= 1.0
    assert report["scores"]["distilled"] == report["scores"]["base"]  # the same model, greedy
    assert [len(report["examples"][role]) for role in ("teacher", "base", "distilled")] == [3, 3, 3]
    assert report["timings"]["base_seconds"] > 0
    assert read_json(job.store, job.paths.file("report.json")) == json.loads(json.dumps(report))
    assert job.store.read(job.paths.file("report.png")).data.startswith(PNG)
    markdown = job.store.read(job.paths.file("report.md")).data.decode("utf-8")
    assert "| teacher (`distill-test-teacher`) | 100.0% | 8 |" in markdown
    assert "reference answers of 8 validation rows" in markdown
    assert "![Scores and fine-tune loss curves](report.png)" in markdown
