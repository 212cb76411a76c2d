"""Draws docs/architecture.png, the deployed app's data flow: `python docs/architecture.py` (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("architecture.png")
W, H = 2.3, 0.9  # box size, in plot units

# Box colours by kind: storage, messaging/events, function, outside service.
COLOURS = {"store": "#dbeafe", "bus": "#fde68a", "fn": "#bbf7d0", "ext": "#e5e7eb", "dead": "#fecaca"}

BOXES = {  # key: (x, y, kind, label)
    "input": (0.0, 6.0, "store", "Blob Storage\ninput/<job>/\n(data, then manifest)"),
    "grid_blob": (3.0, 6.0, "bus", "Event Grid\nBlobCreated\n(input/, data.api, manifest)"),
    "ingest": (6.0, 6.0, "fn", "ingest_blob\nvalidate, write shards,\nplan"),
    "shards": (9.0, 6.0, "bus", "Service Bus\nqueue: shards"),
    "teacher": (12.0, 6.0, "fn", "teacher\n(one shard a message,\nmany instances)"),
    "endpoint": (12.0, 8.0, "ext", "teacher endpoint\nAzure OpenAI / AI / any\nOpenAI-compatible"),
    "completions": (12.0, 3.6, "bus", "Service Bus\nqueue: completions"),
    "aggregate": (9.0, 3.6, "fn", "aggregate\nthe last shard assembles\nthe dataset"),
    "jobs": (6.0, 3.6, "store", "Blob Storage jobs/<job>/\nstatus.json, train.jsonl,\nvalidation, rejected"),
    "azureml": (9.0, 1.2, "ext", "AzureML workspace\nfine-tune the student\n(serverless)"),
    "grid_runs": (6.0, 1.2, "bus", "Event Grid\nRunStatusChanged\n(distill_job tag)"),
    "job_events": (3.0, 1.2, "fn", "job_events\n(+ poll_finetunes timer,\nevery 5 min)"),
    "status": (3.0, 3.6, "fn", "status\nGET /api/jobs/{job}"),
    "user": (0.0, 3.6, "ext", "user / distill CLI"),
    "dead": (15.0, 3.6, "dead", "dead-letter queues\nshards, completions\n→ job failed + reason"),
    "kv": (15.0, 8.0, "ext", "Key Vault\nteacher key\n(app setting reference)"),
}

ARROWS = [  # (from, to, label)
    ("input", "grid_blob", ""),
    ("grid_blob", "ingest", "webhook"),
    ("ingest", "shards", "1 msg / shard"),
    ("shards", "teacher", ""),
    ("teacher", "endpoint", "chat completions"),
    ("kv", "teacher", "key"),
    ("teacher", "completions", "shard done"),
    ("completions", "aggregate", ""),
    ("aggregate", "jobs", "dataset"),
    ("aggregate", "azureml", "start ONE fine-tune"),
    ("azureml", "grid_runs", ""),
    ("grid_runs", "job_events", ""),
    ("job_events", "jobs", "succeeded / failed"),
    ("status", "jobs", "read"),
    ("user", "status", ""),
    ("user", "input", "upload"),
    ("shards", "dead", ""),
    ("completions", "dead", "max deliveries"),
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
    fig, ax = plt.subplots(figsize=(16, 8.5))
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
    ax.set_xlim(-0.4, 17.7)
    ax.set_ylim(0.7, 9.3)
    ax.axis("off")
    ax.set_title("Distill on Azure: one Flex Consumption function app, one user-assigned identity", fontsize=12)
    legend = [("Blob Storage", "store", 0.0), ("Service Bus / Event Grid", "bus", 2.2), ("function", "fn", 5.4),
              ("outside service", "ext", 7.0), ("failure path", "dead", 9.2)]
    for text, kind, x in legend:
        ax.add_patch(FancyBboxPatch((x, 8.55), 0.4, 0.3, boxstyle="round,pad=0.02", fc=COLOURS[kind], ec="#374151"))
        ax.text(x + 0.5, 8.7, text, va="center", fontsize=8)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    draw()
    print(f"wrote {OUT}")
