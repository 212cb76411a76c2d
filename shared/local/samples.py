"""Sample data the project makes itself: NLI pairs built from templates, with known labels.

Used by `make demo` and the tests so nothing depends on public datasets. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from shared.local.models import STUDENT, TEACHER

# Worded for the default 1.5B teacher, which is sensitive to it: with the instruction before the pair it answered
# "neutral" to every entailment; with the question after the pair and this system prompt it labelled 49 of 54
# generated pairs right (other system prompts moved it to "contradiction" for the neutral ones).
NLI_SYSTEM = "You label premise-hypothesis pairs."
NLI_QUESTION = (
    "If the premise is true, is the hypothesis certainly true (entailment), certainly false (contradiction), "
    "or could it be either (neutral)? Answer with one word: entailment, contradiction or neutral."
)

_NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Diego", "Sofia", "Jonas", "Mei", "Samuel"]
_PLACES = ["library", "market", "station", "museum", "harbour", "garden", "bakery", "stadium", "clinic", "school"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# (past tense, base form, object)
_ACTS = [
    ("painted", "paint", "fence"), ("repaired", "repair", "bicycle"), ("bought", "buy", "lamp"),
    ("sold", "sell", "guitar"), ("cleaned", "clean", "kitchen"), ("delivered", "deliver", "parcel"),
    ("borrowed", "borrow", "ladder"), ("photographed", "photograph", "bridge"), ("baked", "bake", "cake"),
    ("washed", "wash", "car"),
]

_HYPOTHESES = {
    "entailment": [
        "On {day}, {name} {past} the {obj} at the {place}.",
        "The {obj} was {past} by {name}.",
        "Someone {past} the {obj} at the {place}.",
    ],
    "contradiction": [
        "{name} did not {base} anything on {day}.",
        "Nobody {past} the {obj} on {day}.",
        "{name} stayed at home all day on {day} and never went to the {place}.",
    ],
    "neutral": [
        "{name} was happy with the {obj}.",
        "{name} enjoyed the visit to the {place}.",
        "{name} went to the {place} with a friend.",
    ],
}


def nli_pairs(seed: int = 0) -> Iterator[tuple[str, str, str]]:
    """An endless, deterministic stream of (premise, hypothesis, label), labels in turn."""
    rng = random.Random(seed)
    labels = list(_HYPOTHESES)
    i = 0
    while True:
        past, base, obj = rng.choice(_ACTS)
        slots = {"name": rng.choice(_NAMES), "place": rng.choice(_PLACES), "day": rng.choice(_DAYS),
                 "past": past, "base": base, "obj": obj}
        label = labels[i % len(labels)]
        premise = "{name} {past} the {obj} at the {place} on {day}.".format(**slots)
        yield premise, rng.choice(_HYPOTHESES[label]).format(**slots), label
        i += 1


def nli_row(premise: str, hypothesis: str, label: str) -> dict[str, list[dict[str, str]]]:
    """A chat row with the label as its reference answer."""
    user = f"Premise: {premise}\nHypothesis: {hypothesis}\n\n{NLI_QUESTION}"
    return {"messages": [{"role": "system", "content": NLI_SYSTEM}, {"role": "user", "content": user},
                         {"role": "assistant", "content": label}]}


def write_nli_sample(out: Path, rows: int, validation_rows: int, seed: int = 0) -> None:
    """Write `train.jsonl`, `validation.jsonl` (distinct pairs) and a `manifest.yaml` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    pairs = nli_pairs(seed)
    for name, count in (("train.jsonl", rows), ("validation.jsonl", validation_rows)):
        with (out / name).open("w", encoding="utf-8") as f:
            written = 0
            while written < count:
                premise, hypothesis, label = next(pairs)
                if (premise, hypothesis) in seen:
                    continue
                seen.add((premise, hypothesis))
                f.write(json.dumps(nli_row(premise, hypothesis, label), ensure_ascii=False) + "\n")
                written += 1
    (out / "manifest.yaml").write_text(SAMPLE_MANIFEST, encoding="utf-8")


SAMPLE_MANIFEST = f"""\
# A distillation job over the generated NLI sample (see docs/manifest.md for every field).
task: nli
training_file: train.jsonl
validation_file: validation.jsonl
teacher:
  kind: local
  model: {TEACHER.name}
inference:
  temperature: 0.0
  max_tokens: 16
student:
  model: {STUDENT.name}
  method: full
  hyperparameters:
    n_epochs: 3
"""
