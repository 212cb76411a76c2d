"""The evaluation report of a job: teacher, base student and distilled student scored on the validation rows.

The teacher is scored from the answers it gave while labelling (it is not asked again); the students answer the
same questions here, by greedy generation on this machine. The report is written beside the job's outputs as
`report.json`, `report.md` and `report.png` (score bars, and the fine-tune's loss curves when it left any).
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.evaluation import EvalItem, Mode, evaluation_items, score
from shared.jobs.blobs import dumps, now, read_json
from shared.jobs.paths import METRICS, JobPaths
from shared.local.models import model_folder, native_dtype, prepare_torch
from shared.manifest.model import Manifest
from shared.ports import BlobStore
from shared.tasks.reading import excerpt

ROLES = ("teacher", "base", "distilled")
LABELS = {"teacher": "teacher", "base": "base student", "distilled": "distilled student"}
COLORS = {"teacher": "#7a7a7a", "base": "#d08c3a", "distilled": "#3a7bd0"}
EXAMPLES = 3


# --- generation --------------------------------------------------------------------------------------------
def generate(model: str | Path, conversations: list[list[dict]], *, max_new_tokens: int, batch_size: int = 8
             ) -> list[str]:
    """Greedy replies of `model` (a known model's name or an HF folder) to each conversation, in order."""
    if not conversations:
        return []
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = prepare_torch()
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder(str(model))
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    llm = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, native_dtype())).eval()
    prompts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    replies = [""] * len(prompts)
    with torch.inference_mode(), tqdm(total=len(prompts), desc=f"{Path(str(model)).name} answering",
                                      unit="answer", file=sys.stderr) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            for index, reply in zip(batch, _batch_replies(llm, tokenizer, [prompts[i] for i in batch],
                                                          max_new_tokens), strict=True):
                replies[index] = reply
            bar.update(len(batch))
    return replies


def _batch_replies(llm: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """One left-padded batch through `generate`; the chat template already holds the special tokens."""
    inputs = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    output = llm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


# --- evaluation --------------------------------------------------------------------------------------------
def evaluate_job(store: BlobStore, paths: JobPaths, manifest: Manifest, *, base_model: str,
                 distilled_model: str | Path | None, max_items: int | None = None) -> dict:
    """Score the three models on the job's validation rows, write `report.json|md|png` and return the report."""
    started = time.monotonic()
    items, mode = evaluation_items(store, paths, manifest, max_items)
    answers: dict[str, list[str | None]] = {"teacher": [item.teacher_answer for item in items]}
    timings: dict[str, float] = {}
    limit = manifest.task.rules.answer_tokens(manifest.prompt)  # room for the answer a student learnt to give
    for role, model in (("base", base_model), ("distilled", distilled_model)):
        if model is not None:
            begun = time.monotonic()
            answers[role] = generate(model, [list(item.messages) for item in items], max_new_tokens=limit)
            timings[f"{role}_seconds"] = round(time.monotonic() - begun, 1)
    timings["total_seconds"] = round(time.monotonic() - started, 1)
    models = {"teacher": manifest.teacher.model, "base": str(base_model),
              "distilled": None if distilled_model is None else str(distilled_model)}
    report = build_report(paths.job, manifest, mode, items, answers, models)
    report.update(timings=timings, max_new_tokens=limit)
    write_report(store, paths, report)
    return report


def build_report(job: str, manifest: Manifest, mode: Mode, items: Sequence[EvalItem],
                 answers: dict[str, list[str | None]], models: dict[str, str | None]) -> dict[str, Any]:
    """The report dict: scores as fractions (None for a model not evaluated) and the first examples of each."""
    scores: dict[str, float | None] = dict.fromkeys(ROLES)
    examples: dict[str, list[dict[str, Any]]] = {}
    for role, replies in answers.items():
        points = [score(manifest.task, reply, item.target, question=item.question, prompt=manifest.prompt)
                  for item, reply in zip(items, replies, strict=True)]
        scores[role] = round(sum(points) / len(points), 4) if points else None
        examples[role] = [{"id": item.id, "question": excerpt(item.question), "target": item.target,
                           "answer": reply, "score": round(point, 4)}
                          for item, reply, point in zip(items[:EXAMPLES], replies, points, strict=False)]
    return {"job": job, "task": manifest.task.value, "mode": mode,
            "metric": manifest.task.rules.metric, "n": len(items),
            "models": models, "scores": scores, "examples": examples, "created": now()}


# --- report files ------------------------------------------------------------------------------------------
def write_report(store: BlobStore, paths: JobPaths, report: dict[str, Any]) -> None:
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
    """The score table `distill run` prints."""
    metric = "accuracy" if report["metric"] == "accuracy" else "ROUGE-L"
    lines = [f"{'model':<18} {metric:>9} {'n':>5}"]
    for role in ROLES:
        n = report["n"] if report["scores"].get(role) is not None else "-"
        lines.append(f"{LABELS[role]:<18} {shown_score(report, role):>9} {n:>5}")
    return "\n".join(lines)


def mode_sentence(report: dict[str, Any]) -> str:
    what = "accuracy" if report["metric"] == "accuracy" else "ROUGE-L F1"
    if report["mode"] == "reference":
        return (f"Scores are {what} against the reference answers of {report['n']} validation rows; rows the "
                "teacher failed count against it.")
    return (f"The validation rows carry no reference answers, so scores are {what} against the teacher's own "
            f"answers on the {report['n']} rows it answered: they measure how closely each student imitates the "
            "teacher, who scores 100% by construction.")


def markdown(report: dict[str, Any], *, has_curves: bool) -> str:
    """`report.md`: the table, what the scores mean, the chart, timings and a few examples."""
    models = report["models"]
    rows = [f"| {LABELS[role]}{f' (`{models[role]}`)' if models.get(role) else ''} | {shown_score(report, role)} "
            f"| {report['n'] if report['scores'].get(role) is not None else '-'} |" for role in ROLES]
    picture = "Scores and fine-tune loss curves" if has_curves else "Scores"
    timings = ", ".join(f"{key.removesuffix('_seconds')} {value} s" for key, value in report["timings"].items())
    lines = [f"# Evaluation of job {report['job']} ({report['task']})", "", "| model | score | n |", "|---|---|---|",
             *rows, "", mode_sentence(report), "", f"![{picture}](report.png)", "", f"Timings: {timings}."]
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
    roles = [role for role in ROLES if report["scores"].get(role) is not None]
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
