"""The evaluation report's files: `report.json`, `report.md` and `report.png` (score bars, and the fine-tune's loss
curves when it left any), written beside the job's outputs by the evaluation step (shared.pipeline.evaluate), and the
score table `distill run` prints. matplotlib is imported only when the chart is drawn.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from shared.evaluation import ROLES
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import METRICS, JobPaths
from shared.ports import BlobStore
from shared.tasks.reading import excerpt

LABELS = {"teacher": "teacher", "base": "base student", "distilled": "distilled student"}
COLORS = {"teacher": "#7a7a7a", "base": "#d08c3a", "distilled": "#3a7bd0"}
REPORT_FILES = ("report.json", "report.md", "report.png")


def write_report(store: BlobStore, paths: JobPaths, report: dict[str, Any]) -> None:
    """The three report files; the JSON last, so its presence says the others are there."""
    curves = loss_curves(read_metrics(store, paths))
    store.write(paths.file("report.png"), chart(report, curves))
    store.write(paths.file("report.md"), markdown(report, has_curves=bool(curves)).encode("utf-8"))
    store.write(paths.file("report.json"), dumps(report))


def read_metrics(store: BlobStore, paths: JobPaths) -> Any:
    """The fine-tune's `metrics.json` as parsed JSON; None when it is missing or unreadable."""
    try:
        return read_json(store, paths.file(METRICS))
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None


def shown_score(report: dict[str, Any], role: str) -> str:
    value = report["scores"].get(role)
    if value is None:
        return "not run" if report["n"] else "no rows"
    return f"{value:.1%}" if report["metric"] == "accuracy" else f"{value:.3f}"


def format_table(report: dict[str, Any]) -> str:
    """The score table `distill run` prints, with the student's agreement with the teacher."""
    metric = "accuracy" if report["metric"] == "accuracy" else "ROUGE-L"
    lines = [f"{'model':<18} {metric:>9} {'n':>5}"]
    for role in ROLES:
        n = report["n"] if role in report["scores"] else "-"
        lines.append(f"{LABELS[role]:<18} {shown_score(report, role):>9} {n:>5}")
    if (agreed := report.get("agreement")) is not None:
        lines.append(f"the distilled student agrees with the teacher on {agreed:.1%} of the rows"
                     if report["metric"] == "accuracy" else
                     f"the distilled student's ROUGE-L against the teacher's answers: {agreed:.3f}")
    return "\n".join(lines)


def mode_sentence(report: dict[str, Any]) -> str:
    what = "accuracy" if report["metric"] == "accuracy" else "ROUGE-L F1"
    if report["mode"] == "reference":
        return (f"Targets: the reference answers of {report['n']} validation rows; scores are {what}, and rows the "
                "teacher failed count against it.")
    return (f"Targets: the teacher's own answers (the validation rows carry no reference answers), on the "
            f"{report['n']} rows it answered; scores are {what} and measure how closely each student imitates the "
            "teacher, who scores 100% by construction.")


def labels_sentence(labels: dict[str, int]) -> str:
    """How the teacher's labels compare with the rows' reference answers, before and after drop_disagreeing."""
    checked, agreed, dropped = labels["checked"], labels["agreed"], labels["dropped"]
    before = (f"The teacher's labels agree with the reference answers on {agreed / checked:.1%} of the {checked} "
              "rows that have one")
    if not dropped:
        return before + " (none was dropped: the student trained on them as they are)."
    kept = checked - dropped
    return (before + f" before the filter; drop_disagreeing dropped {dropped}, so {agreed / kept:.1%} of the "
            f"{kept} kept agree.") if kept else before + f"; drop_disagreeing dropped all {dropped}."


def markdown(report: dict[str, Any], *, has_curves: bool) -> str:
    """`report.md`: the table, what the scores mean, the chart, the cost of the evaluation and a few examples."""
    models, scores = report["models"], report["scores"]
    rows = [f"| {LABELS[role]}{f' (`{models[role]}`)' if models.get(role) else ''} | {shown_score(report, role)} "
            f"| {report['n'] if role in scores else '-'} |" for role in ROLES]
    picture = "Scores and fine-tune loss curves" if has_curves else "Scores"
    lines = [f"# Evaluation of job {report['job']} ({report['task']})", "", "| model | score | n |", "|---|---|---|",
             *rows, "", mode_sentence(report)]
    if (agreed := report.get("agreement")) is not None:
        lines += ["", f"Agreement of the distilled student with the teacher: {agreed:.1%} of the rows the teacher "
                  "answered." if report["metric"] == "accuracy" else
                  f"ROUGE-L F1 of the distilled student against the teacher's answers: {agreed:.3f}."]
    if labels := report.get("labels"):
        lines += ["", labels_sentence(labels)]
    lines += [f"- {note}" for note in report.get("notes", [])]
    lines += ["", f"![{picture}](report.png)", ""]
    if tokens := report.get("tokens"):
        used = "; ".join(f"{LABELS[role]} {t['prompt']:,} prompt + {t['completion']:,} completion"
                         for role, t in tokens.items())
        lines.append(f"Tokens the evaluation used: {used} (the teacher's score comes from the answers it gave while "
                     "labelling: it was not asked again).")
    if failed := report.get("failed_calls"):
        lines.append("Calls that failed (scored 0): " + ", ".join(f"{LABELS[role]} {n}" for role, n in failed.items())
                     + ".")
    if timings := report.get("timings"):
        lines.append("Timings: " + ", ".join(f"{key.removesuffix('_seconds')} {value} s"
                                             for key, value in timings.items()) + ".")
    lines.append("Every row's answers are in `evaluation.jsonl`.")
    for role, examples in report["examples"].items():
        lines += ["", f"## Examples: {LABELS[role]}", ""]
        lines += [f"- **question:** {example['question']}<br>**answer:** {excerpt(example['answer']) or '(none)'}"
                  f"<br>**target:** {excerpt(example['target'])} — score {example['score']}" for example in examples]
    return "\n".join(lines) + "\n"


# --- loss curves and the chart -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Curve:
    name: str  # "train" or "eval"
    x: str  # what the points are measured against: "step" or "epoch"
    points: list[tuple[float, float]]


_SERIES = {"train": ("train", "train_loss", "training", "loss"),
           "eval": ("eval", "eval_loss", "validation", "valid", "evaluation")}
_LOSS_KEYS = ("loss", "eval_loss", "train_loss", "value")
_X_KEYS = ("step", "epoch", "x")


def loss_curves(metrics: Any) -> list[Curve]:
    """Train and eval loss curves read defensively from the fine-tune's `metrics.json`; [] when there are none.

    Takes `{"train": [{"step", "loss"}], "eval": [{"epoch" or "step", "loss"}]}` (other usual key names too),
    `{"log_history": [...]}`, or a list of mixed entries as the Hugging Face trainer logs them.
    """
    return [curve for name, entries in _series(metrics).items() if (curve := _curve(name, entries))]


def _series(metrics: Any) -> dict[str, list[Any]]:
    """The entries of each series ("train", "eval"), however the file groups them."""
    if isinstance(metrics, dict):
        named = {name: next((metrics[key] for key in keys if isinstance(metrics.get(key), list)), [])
                 for name, keys in _SERIES.items()}
        if any(named.values()):
            return named
        metrics = metrics.get("log_history") or metrics.get("history")
    if not isinstance(metrics, list):
        return {}
    return {name: [entry for entry in metrics if _entry_kind(entry) == name] for name in _SERIES}


def _entry_kind(entry: Any) -> str | None:
    """A log entry's series: "eval" for an eval loss, "train" for a training loss, else None."""
    if not isinstance(entry, dict):
        return None
    if "eval_loss" in entry or str(entry.get("split", entry.get("kind", ""))).lower() in _SERIES["eval"]:
        return "eval"
    return "train" if "loss" in entry or "train_loss" in entry else None


def _curve(name: str, entries: list[Any]) -> Curve | None:
    points = [point for entry in entries if (point := _point(entry))]
    if not points:
        return None
    x = points[0][0]
    return Curve(name, x, sorted((step, loss) for key, step, loss in points if key == x))


def _point(entry: Any) -> tuple[str, float, float] | None:
    """(x key, x, loss) of a `{"step": .., "loss": ..}` entry or a `[step, loss]` pair; None when unreadable."""
    if isinstance(entry, list | tuple) and len(entry) == 2 and all(map(_is_number, entry)):
        return "step", float(entry[0]), float(entry[1])
    if not isinstance(entry, dict):
        return None
    loss = next((entry[key] for key in _LOSS_KEYS if _is_number(entry.get(key))), None)
    x = next((key for key in _X_KEYS if _is_number(entry.get(key))), None)
    return None if loss is None or x is None else (x, float(entry[x]), float(loss))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def chart(report: dict[str, Any], curves: list[Curve]) -> bytes:
    """`report.png`: score bars, and beside them the loss curves when there are any."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11 if curves else 6, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if curves else 1, squeeze=False)[0]
    _score_bars(axes[0], report)
    if curves:
        _loss_panel(axes[1], curves)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _score_bars(axis: Any, report: dict[str, Any]) -> None:
    roles = [role for role in ROLES if role in report["scores"]]
    if not roles:
        axis.text(0.5, 0.5, "no validation rows to score", ha="center", va="center", transform=axis.transAxes)
    values = [report["scores"][role] for role in roles]
    bars = axis.bar([LABELS[role] for role in roles], values, color=[COLORS[role] for role in roles])
    axis.bar_label(bars, labels=[shown_score(report, role) for role in roles])
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("accuracy" if report["metric"] == "accuracy" else "ROUGE-L F1")
    axis.set_title(f"{report['task']}: {report['n']} validation rows ({report['mode']} targets)")


def _loss_panel(axis: Any, curves: list[Curve]) -> None:
    """Each curve against its own x (steps, epochs): a second x axis on top when they differ."""
    by_x = {curves[0].x: axis}
    lines = []
    for curve, color in zip(curves, ("#3a7bd0", "#d03a3a"), strict=False):
        target = by_x.get(curve.x)
        if target is None:
            target = by_x[curve.x] = axis.twiny()
        xs, ys = zip(*curve.points, strict=True)
        lines += target.plot(xs, ys, marker="o" if curve.name == "eval" else None, color=color,
                             label=f"{curve.name} loss")
        target.set_xlabel(curve.x)
    axis.set_ylabel("loss")
    axis.set_title("fine-tune loss")
    axis.legend(lines, [line.get_label() for line in lines])
