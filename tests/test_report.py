"""The evaluation report: loss curves read defensively, the table, the files; and SmolLM2-135M deployed on this
machine and asked over HTTP, as the evaluation step asks a student."""

import importlib.util
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_evaluation import answers_of, nli_sample, run_job

from shared.evaluation import EvalItem, build_report, evaluation_items, points
from shared.jobs.paths import JobPaths
from shared.local.deployer import LocalModelDeployer
from shared.local.model_server import in_flight
from shared.local.models import STUDENT
from shared.manifest.model import Manifest, TeacherKind, TeacherSettings
from shared.report import Curve, chart, format_table, loss_curves, markdown, write_report
from shared.storage.local import LocalBlobStore
from shared.students import Reach, ask
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
    asked = items("entailment", None)
    scores = {role: points(manifest, asked, replies) for role, replies in answers.items()}
    report = build_report("job1", manifest, mode, asked, answers, scores, {"teacher": "t", "base": "b"})
    return report | {"timings": {"base_seconds": 1.0, "total_seconds": 1.5}}


def test_the_teacher_scores_zero_on_rows_it_failed_and_a_model_not_run_is_left_out() -> None:
    report = nli_report({"teacher": ["entailment", None], "base": ["Entailment.", "neutral"]})
    assert report["scores"] == {"teacher": 0.5, "base": 0.5}
    assert report["examples"]["base"][0] == {"id": "id0", "question": "Premise: a. Hypothesis: b.",
                                             "target": "entailment", "answer": "Entailment.", "score": 1.0}
    assert format_table(report) == ("model               accuracy     n\n"
                                    "teacher                50.0%     2\n"
                                    "base student           50.0%     2\n"
                                    "distilled student    not run     -")


def test_the_distilled_students_agreement_with_the_teacher_is_on_the_rows_the_teacher_answered() -> None:
    report = nli_report({"teacher": ["entailment", None], "distilled": ["entailment", "neutral"]})
    assert report["agreement"] == 1.0 and report["scores"]["distilled"] == 0.5
    assert format_table(report).endswith("the distilled student agrees with the teacher on 100.0% of the rows")


@pytest.mark.parametrize("labels,sentence", [
    ({"checked": 200, "agreed": 150, "dropped": 50}, "The teacher's labels agree with the reference answers on 75.0% "
     "of the 200 rows that have one before the filter; drop_disagreeing dropped 50, so 100.0% of the 150 kept agree."),
    ({"checked": 200, "agreed": 150, "dropped": 0}, "The teacher's labels agree with the reference answers on 75.0% "
     "of the 200 rows that have one (none was dropped: the student trained on them as they are)."),
])
def test_the_report_gives_the_teachers_label_accuracy_before_and_after_the_filter(labels: dict, sentence: str) -> None:
    report = nli_report({"teacher": ["entailment", "entailment"]}) | {"labels": labels}
    assert sentence in markdown(report, has_curves=False)


def test_the_chart_is_a_png_with_or_without_loss_curves() -> None:
    report = nli_report({"teacher": ["entailment", None], "base": ["x", "y"]})
    curves = [Curve("train", "step", [(1.0, 2.0), (2.0, 1.0)]), Curve("eval", "epoch", [(1.0, 1.5)])]
    assert chart(report, curves).startswith(PNG)
    assert chart(report, []).startswith(PNG)


def test_an_unreadable_metrics_file_leaves_the_loss_curves_out(tmp_path: Path) -> None:
    store, paths = LocalBlobStore(tmp_path), JobPaths("jobs", "job1")
    store.write(paths.file("finetune/metrics.json"), b"{not json")
    report = nli_report({"teacher": ["entailment", "entailment"]})
    write_report(store, paths, report | {"tokens": {"base": {"prompt": 1200, "completion": 40}}})
    markdown = store.read(paths.file("report.md")).data.decode("utf-8")
    assert "![Scores](report.png)" in markdown
    assert "| distilled student | not run | - |" in markdown
    assert "Tokens the evaluation used: base student 1,200 prompt + 40 completion" in markdown
    assert "Targets: the reference answers of 2 validation rows" in markdown
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


def test_a_model_served_here_is_deployed_asked_and_removed(tmp_path: Path, model_cache: None) -> None:
    """The local deployer serves SmolLM2-135M with `transformers serve`, not waiting for it; the evaluation's client
    asks it over HTTP; removing the deployment stops the server."""
    files = nli_sample(tmp_path / "sample")
    job = run_job(tmp_path, files, answers_of(files))
    asked, _ = evaluation_items(job.store, job.paths, job.manifest, 4)
    deployer = LocalModelDeployer()
    try:
        with pytest.raises(ValueError, match="cannot be served here"):
            deployer.deploy("job1", "distilled", str(tmp_path / "no-such-model"))
        first = deployer.deploy("job1", "base", STUDENT.name)
        assert first.state == "creating" and first.url is None  # started, not waited for
        deadline = time.monotonic() + 600
        while (deployment := deployer.deploy("job1", "base", STUDENT.name)).state == "creating":
            assert time.monotonic() < deadline, "the model server was not ready within 600 s"
            time.sleep(1)
        assert deployment.state == "ready", deployment.error
        assert deployer.deploy("job1", "base", "another-model").state == "failed"
        settings = TeacherSettings(kind=TeacherKind.LOCAL, model=STUDENT.name, timeout_seconds=600)
        answers = ask(Reach(settings, {}, deployment.url), asked, max_tokens=8)
        assert deployment.in_flight == in_flight()  # as many calls at once as the device batches well
        assert answers.failed == 0 and all(isinstance(reply, str) for reply in answers.replies)
        assert answers.prompt_tokens > 0 and answers.completion_tokens > 0
    finally:
        deployer.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(deployment.url.removesuffix("/v1") + "/health", timeout=2)
