"""The MATH quality table: which labels, and which student, close the gap to the teacher.

On the MATH rows with reference answers (378 training, 42 validation), with the local teacher reasoning step by step:
1. labels at `prompt.samples` 1 and 3, each with and without `drop_disagreeing` (four labelling-only jobs), all at the
   sampling temperature: the single sample is the first of the three, so the table shows what the vote adds, and the
   single-sample jobs ask the teacher nothing the three-sample ones do not (`--variants` makes only some of them);
2. the Qwen2.5-Coder-0.5B student, LoRA, trained on reasoning and answer (`keep_reasoning`) from the best of those
   labels: the job's report scores the teacher, the base student asked with the rows' own prompt, and the distilled
   student on the validation rows;
3. the base 0.5B asked the same questions with a plain "reason step by step" prompt.

Every step is a local job (`distill run`) under the usual `.distill` (or $DISTILL_HOME): running this again continues
where it stopped, and every teacher reply comes from the response cache the jobs share, so nothing is paid twice.
Hours on 2 CPU cores (minutes on a GPU). Figures are printed and written to OUT/table.json:
`python -m bench.math_table [--data ../shared/data/gold/math] [--out out/math-table] [--variants NAME ...] [--epochs N]`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT
from shared.evaluation import EvalItem, score
from shared.local.model_server import start_model_server
from shared.local.models import REASONING_STUDENT
from shared.local.run import home
from shared.manifest.model import SAMPLING_TEMPERATURE, PromptSettings, TeacherKind, TeacherSettings
from shared.students import Reach, ask
from shared.tasks import Task

STUDENT = REASONING_STUDENT.name.lower()
# Three samples first: each row's samples are asked at once, and the single-sample jobs then find theirs cached.
VARIANTS = {"math-s3": (3, False), "math-s3-checked": (3, True), "math-s1": (1, False), "math-s1-checked": (1, True)}
REPLY_TOKENS = 320  # the teacher's reasoning and answer; the students get the same room (plus an answer line)
STEP_BY_STEP = ("Solve the math problem. Reason step by step in a few short sentences, then end with a last line "
                "'Answer: <number>' giving the final answer as a plain number.")


def job_file(job: str, name: str) -> Path:
    """A file of a local job (the jobs run with this checkout as their working folder)."""
    return ROOT / home() / "storage" / "jobs" / job / name


def manifest(data: Path, name: str, samples: int, drop: bool, finetune: bool,
             epochs: int | None = None) -> dict[str, Any]:
    """The job's manifest; `epochs` overrides the trainer's default number of passes."""
    student: dict[str, Any] = {"model": STUDENT, "method": "lora"}
    if epochs is not None:
        student["hyperparameters"] = {"n_epochs": epochs}
    return {"task": "math", "name": name, "training_file": str(data / "train.jsonl"),
            "validation_file": str(data / "validation.jsonl"), "teacher": {"kind": "local"},
            "inference": {"max_tokens": REPLY_TOKENS, "temperature": SAMPLING_TEMPERATURE},
            "prompt": {"chain_of_thought": True, "keep_reasoning": True, "samples": samples},
            "drop_disagreeing": drop, "student": student, "finetune": finetune}


def run_job(out: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """`distill run` the manifest (continuing the job if it exists); its status.json."""
    path = out / f"{spec['name']}.yaml"
    path.write_text(json.dumps(spec, indent=2) + "\n")  # JSON is YAML
    print(f"== {spec['name']}", flush=True)
    done = subprocess.run([sys.executable, "-m", "shared.cli", "run", str(path), "--out", str(out / spec["name"])],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    status = json.loads(job_file(spec["name"], "status.json").read_text())
    if done.returncode != 0:
        raise RuntimeError(f"job {spec['name']} ended {status.get('state')}: {status.get('errors')}")
    return status


def distilled_job(labels: str) -> str:
    """The job that trains the student on the labels of the variant `labels` ("math-s3" trains "math-distilled-s3")."""
    return labels.replace("math-", "math-distilled-", 1)


def labels(status: dict[str, Any]) -> dict[str, Any]:
    """What a labelling job kept: rows, the teacher's accuracy against the references before the reference check,
    and the share of the kept labels that are right."""
    kept = status["accepted"]["train"] + status["accepted"]["validation"]
    checked, agreed = status["references"]["checked"], status["references"]["agreed"]
    return {"train_rows": status["accepted"]["train"], "kept": kept, "teacher_accuracy": round(agreed / checked, 4),
            "kept_right": round(agreed / kept, 4), "filtered": status.get("filtered") or {}}


def best(found: dict[str, dict[str, Any]]) -> str:
    """The labels to train on: the most accurate kept labels, then the most training rows."""
    return max(found, key=lambda name: (found[name]["kept_right"], found[name]["train_rows"]))


def step_by_step(data: Path) -> dict[str, Any]:
    """The base 0.5B asked every validation question with STEP_BY_STEP as its system prompt, scored as the
    evaluation scores."""
    items = []
    for index, line in enumerate((data / "validation.jsonl").read_text().splitlines()):
        messages = json.loads(line)["messages"]
        user = next(m for m in messages if m["role"] == "user")
        items.append(EvalItem(str(index), ({"role": "system", "content": STEP_BY_STEP}, user),
                              messages[-1]["content"], None))
    settings = TeacherSettings(kind=TeacherKind.LOCAL, model=REASONING_STUDENT.name, timeout_seconds=1800)
    with start_model_server(REASONING_STUDENT.name) as url:
        room = Task.MATH.rules.answer_tokens(PromptSettings(chain_of_thought=True, keep_reasoning=True), REPLY_TOKENS)
        answers = ask(Reach(settings, os.environ, url), items, room)
    points = [score(Task.MATH, reply, item.target, question=item.question, prompt=PromptSettings())
              for item, reply in zip(items, answers.replies, strict=True)]
    return {"score": round(sum(points) / len(points), 4), "right": int(sum(points)), "n": len(points)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "gold" / "math")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "math-table")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the labels to make and choose from (default: all four)")
    parser.add_argument("--epochs", type=int, help="passes over the training rows (default: the trainer's, 3)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table: dict[str, Any] = {"labels": {}}
    for name in args.variants:
        samples, drop = VARIANTS[name]
        table["labels"][name] = labels(run_job(args.out, manifest(args.data, name, samples, drop, finetune=False)))
        print(json.dumps({name: table["labels"][name]}), flush=True)
    table["trained_on"] = chosen = best(table["labels"])
    table["epochs"] = args.epochs  # null: the trainer's default
    samples, drop = VARIANTS[chosen]
    run_job(args.out, manifest(args.data, trained := distilled_job(chosen), samples, drop, True, args.epochs))
    report = json.loads(job_file(trained, "report.json").read_text())
    table["scores"] = report["scores"]
    table["base_step_by_step"] = step_by_step(args.data)
    (args.out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(table, indent=2))
    teacher, base, distilled = (table["scores"][role] for role in ("teacher", "base", "distilled"))
    print(f"distilled {distilled:.1%}: closes {(distilled - base) / (teacher - base):.0%} of the gap from the base "
          f"student ({base:.1%}) to the teacher ({teacher:.1%}); the base prompted to reason step by step: "
          f"{table['base_step_by_step']['score']:.1%}")


if __name__ == "__main__":
    main()
