"""Draws docs/architecture.png: the deployed app's data flow, and the code's layers under it.
`python docs/architecture.py` (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("architecture.png")
W, H = 2.3, 0.9  # a flow box, in plot units

# Box colours by kind: storage, messaging/events, function, outside service, failure path, code layer.
COLOURS = {"store": "#dbeafe", "bus": "#fde68a", "fn": "#bbf7d0", "ext": "#e5e7eb", "dead": "#fecaca",
           "code": "#f5f5f4"}

# The data flow. A function box names its trigger: functions/<name>.py calls shared/pipeline/<name>.py.
BOXES = {  # key: (x, y, kind, label)
    "input": (0.0, 6.0, "store", "Blob Storage\ninput/<job>/\n(data, then manifest)"),
    "grid_blob": (3.0, 6.0, "bus", "Event Grid\nBlobCreated\n(input/, data.api, manifest)"),
    "ingest": (6.0, 6.0, "fn", "ingest\nvalidate, write shards,\nplan"),
    "shards": (9.0, 6.0, "bus", "Service Bus\nqueue: shards"),
    "label": (12.0, 6.0, "fn", "label\n(one shard a message,\nmany instances)"),
    "endpoint": (12.0, 8.0, "ext", "teacher endpoint\nAzure OpenAI / AI / any\nOpenAI-compatible"),
    "completions": (12.0, 3.6, "bus", "Service Bus\nqueue: completions"),
    "aggregate": (9.0, 3.6, "fn", "aggregate\nthe last shard assembles\nthe dataset"),
    "jobs": (6.0, 3.6, "store", "Blob Storage jobs/<job>/\nstatus.json, train.jsonl,\nvalidation, rejected"),
    "azureml": (9.0, 1.2, "ext", "AzureML workspace\nfine-tune the student\n(serverless)"),
    "grid_runs": (6.0, 1.2, "bus", "Event Grid\nRunStatusChanged\n(distill_job tag)"),
    "run_events": (3.0, 1.2, "fn", "run_events\n(+ poll_finetunes timer,\nevery 5 min)"),
    "status": (3.0, 3.6, "fn", "status\nGET /api/jobs/{job}"),
    "user": (0.0, 3.6, "ext", "user / distill CLI"),
    "dead": (15.0, 3.6, "dead", "dead_letters\nshards, completions\n→ job failed + reason"),
    "kv": (15.0, 8.0, "ext", "Key Vault\nteacher key\n(app setting reference)"),
}

ARROWS = [  # (from, to, label)
    ("input", "grid_blob", ""),
    ("grid_blob", "ingest", "webhook"),
    ("ingest", "shards", "1 msg / shard"),
    ("shards", "label", ""),
    ("label", "endpoint", "chat completions"),
    ("kv", "label", "key"),
    ("label", "completions", "shard done"),
    ("completions", "aggregate", ""),
    ("aggregate", "jobs", "dataset"),
    ("aggregate", "azureml", "start ONE fine-tune"),
    ("azureml", "grid_runs", ""),
    ("grid_runs", "run_events", ""),
    ("run_events", "jobs", "succeeded / failed"),
    ("status", "jobs", "read"),
    ("user", "status", ""),
    ("user", "input", "upload"),
    ("shards", "dead", "max deliveries"),
    ("completions", "dead", ""),
]

# The code's layers, top to bottom: a module imports only from its own layer and those below it (checked by
# tests/test_architecture.py).
LAYERS = [  # (x, y, width, label)
    (0.0, -0.9, 8.5, "function_app.py, functions/<step>.py: the Azure app,\none trigger each, turned into one call"),
    (8.8, -0.9, 8.5, "the local mode and the tools (never in the Azure package):\n"
                     "local/ (runtime, model server, trainer, report), cli/, testkit/"),
    (0.0, -2.1, 17.3, "shared/pipeline/<step>.py: ingest, label, aggregate, run_events, status, dead_letters "
                      "(+ budget, cancel, messages, telemetry); services.py picks the adapters"),
    (0.0, -3.3, 17.3, "adapters: storage/ (azure_blob, local), queueing/ (servicebus, local), "
                      "teacher/ (openai_compatible, azure_ai, azure_openai, local_model; retries, limits, cache, "
                      "batch), finetune/azureml"),
    (0.0, -4.5, 8.5, "domain, pure Python: tasks/ (one module a task type), manifest/,\n"
                     "jobs/ (record, paths, shard codec), validation, prompts, parsing, assembly"),
    (8.8, -4.5, 8.5, "ports.py: BlobStore, QueueSender, Teacher, FineTuner, Progress;\n"
                     "settings, logging and tracing"),
]


def centre(key: str) -> tuple[float, float]:
    x, y, _, _ = BOXES[key]
    return x + W / 2, y + H / 2


def edge_point(key: str, towards: tuple[float, float]) -> tuple[float, float]:
    """Where the line from a box's centre towards a point leaves the box."""
    cx, cy = centre(key)
    dx, dy = towards[0] - cx, towards[1] - cy
    scale = min(W / 2 / abs(dx) if dx else float("inf"), H / 2 / abs(dy) if dy else float("inf"))
    return cx + dx * scale, cy + dy * scale


def draw() -> None:
    fig, ax = plt.subplots(figsize=(16, 12))
    for x, y, kind, label in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), W, H, boxstyle="round,pad=0.08", fc=COLOURS[kind], ec="#374151", lw=1.2))
        ax.text(x + W / 2, y + H / 2, label, ha="center", va="center", fontsize=8.5)
    for start, end, label in ARROWS:
        a, b = edge_point(start, centre(end)), edge_point(end, centre(start))
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color="#111827", lw=1.2,
                                     linestyle="--" if "dead" in (start, end) else "-"))
        if label:
            ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.12, label, ha="center", fontsize=7.5, color="#1f2937",
                    bbox={"fc": "white", "ec": "none", "pad": 1})
    ax.text(0.0, 0.25, "The code: each layer imports only from itself and the layers below it", fontsize=10,
            weight="bold")
    for x, y, width, label in LAYERS:
        ax.add_patch(FancyBboxPatch((x, y), width, 0.8, boxstyle="round,pad=0.06", fc=COLOURS["code"],
                                    ec="#374151", lw=1.0))
        ax.text(x + 0.2, y + 0.4, label, va="center", fontsize=8.2)
    ax.set_xlim(-0.4, 17.7)
    ax.set_ylim(-4.9, 9.3)
    ax.axis("off")
    ax.set_title("Distill on Azure: one Flex Consumption function app, one user-assigned identity; each function "
                 "calls the pipeline step of its name", fontsize=12)
    legend = [("Blob Storage", "store", 0.0), ("Service Bus / Event Grid", "bus", 2.2), ("function", "fn", 5.4),
              ("outside service", "ext", 7.0), ("failure path", "dead", 9.2)]
    for text, kind, x in legend:
        ax.add_patch(FancyBboxPatch((x, 8.55), 0.4, 0.3, boxstyle="round,pad=0.02", fc=COLOURS[kind], ec="#374151"))
        ax.text(x + 0.5, 8.7, text, va="center", fontsize=8)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    draw()
    print(f"wrote {OUT}")
