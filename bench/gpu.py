"""The local models on a GPU: generation throughput at growing batches, and training steps at batch 4 and 32.

No weights are needed: each packaged model is built from its configuration (its real shape) with random weights, in
bfloat16 on the device `shared.local.models.local_device` picks. Generation is greedy, a fixed number of new tokens
for every sequence (a prompt of PROMPT_TOKENS tokens), as the model server's continuous batching runs it; a training
step is a forward and backward pass with bfloat16 mixed precision and an AdamW update, as the trainer makes it.

Figures: tokens generated per second at each batch, seconds per training step at each batch, the GPU's peak memory.

`--job TOKENIZER` then runs a whole local job there (`distill run`: the model server labels, the trainer fine-tunes,
the evaluation asks the students) with a teacher of the 1.5B shape and a student of the 0.5B shape, both with random
weights and the Qwen tokenizer found in the folder TOKENIZER, on JOB_ROWS templated conversation rows: the figures are
the job's phase times. Random weights answer noise, so it times the device path, not quality; one token in STOP_EVERY
ends a reply, so the teacher's sampled replies end at random lengths as real ones do.

Where torch sees no GPU it says so and stops, with exit code 0: `python -m bench.gpu [--job TOKENIZER]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import distill, job_record, workspace
from shared.local.models import REASONING_STUDENT, TEACHER, local_device, prepare_torch

# The packaged models' shapes (their GGUF files' configurations), without their weights.
SHAPES: dict[str, dict[str, Any]] = {
    "Qwen2.5-Coder-1.5B-Instruct": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
                                    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                                    "vocab_size": 151936, "tie_word_embeddings": True},
    "Qwen2.5-Coder-0.5B-Instruct": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
                                    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                                    "vocab_size": 151936, "tie_word_embeddings": False},
    "SmolLM2-135M-Instruct": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                              "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                              "vocab_size": 49152, "tie_word_embeddings": True},
}
PROMPT_TOKENS = 256
NEW_TOKENS = 64
GENERATION_BATCHES = (16, 128, 512)
TRAINING_BATCHES = (4, 32)
TRAINING_TOKENS = 256  # a row's length in a training step
JOB_ROWS = (512, 80)  # training and validation rows of the `--job` run
STOP_EVERY = 64
QWEN_STOPS = (151643, 151645)  # <|endoftext|>, <|im_end|>
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
TOPICS = ("tides", "bread", "volcanoes", "bees", "compilers", "glaciers", "chess", "radio", "ferns", "bridges",
          "comets", "ink", "salt", "owls", "maps", "clocks")


def random_model(name: str, device: str) -> Any:
    """The model's shape with random weights, in bfloat16 on `device`."""
    torch = prepare_torch()
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(SHAPES[name])
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    torch.manual_seed(0)
    with torch.device(device):  # drawn where it runs: faster than on the CPU
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def generation(model: Any, batch: int, device: str) -> float:
    """Tokens generated per second for `batch` sequences at once."""
    torch = prepare_torch()
    prompt = torch.randint(0, model.config.vocab_size, (batch, PROMPT_TOKENS), device=device)
    with torch.inference_mode():
        model.generate(prompt[:, :8], max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        model.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        torch.cuda.synchronize(device)
    return batch * NEW_TOKENS / (time.perf_counter() - started)


def training_step(model: Any, batch: int, device: str, steps: int = 5) -> float:
    """Seconds per training step (forward, backward, AdamW) at `batch` rows of TRAINING_TOKENS tokens."""
    torch = prepare_torch()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tokens = torch.randint(0, model.config.vocab_size, (batch, TRAINING_TOKENS), device=device)
    timings = []
    for step in range(steps + 1):  # the first step warms up
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        if step:
            timings.append(time.perf_counter() - started)
    model.eval()
    return sum(timings) / len(timings)


def random_folder(name: str, tokenizer: Path, folder: Path) -> Path:
    """A model folder of `name`'s shape with random weights and the tokenizer files from `tokenizer`."""
    model = random_model(name, local_device().name)
    model.generation_config.eos_token_id = [*QWEN_STOPS, *range(STOP_EVERY, model.config.vocab_size, STOP_EVERY)]
    model.generation_config.do_sample = True  # a request's temperature samples (greedy noise repeats one token)
    model.save_pretrained(folder)
    for file in TOKENIZER_FILES:
        shutil.copy(tokenizer / file, folder / file)
    return folder


def conversation_rows(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """Templated one-turn conversations (the reply is replaced by the teacher's)."""
    rows = []
    for n in range(offset, offset + count):
        topic = TOPICS[n % len(TOPICS)]
        rows.append({"messages": [
            {"role": "system", "content": "You are a helpful assistant who answers in a few sentences."},
            {"role": "user", "content": f"Tell me one thing worth knowing about {topic} (question {n})."},
            {"role": "assistant", "content": f"Here is something about {topic}."}]})
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def job(tokenizer: Path) -> dict[str, Any]:
    """Run a whole local job with random-weight models on the local device; its phase times and scores."""
    with workspace("gpu-job") as work:
        teacher = random_folder(TEACHER.name, tokenizer, work / "teacher")
        student = random_folder(REASONING_STUDENT.name, tokenizer, work / "student")
        train, validation = JOB_ROWS
        spec = {"task": "conversation", "name": "gpu-job",
                "training_file": str(write_rows(work / "train.jsonl", conversation_rows(train))),
                "validation_file": str(write_rows(work / "validation.jsonl", conversation_rows(validation, train))),
                "teacher": {"kind": "local", "model": str(teacher)},
                "inference": {"max_tokens": 8 * STOP_EVERY, "temperature": 1.0},
                "student": {"model": str(student), "method": "lora"}}
        manifest = work / "gpu-job.yaml"
        manifest.write_text(json.dumps(spec))  # JSON is YAML
        seconds, _ = distill(work, "run", str(manifest), "--job", "gpu-job")
        status = job_record(work)
        report = job_record(work, "report.json")
    t = status["timings"]
    return {"accepted": status.get("accepted"), "seconds": round(seconds, 1),
            "labelling_s": round(t["labeling_finished"] - t["labeling_started"], 1),
            "finetune_s": round(t["evaluation_started"] - t["finetune_started"], 1),
            "evaluation_s": round(t["evaluated"] - t["evaluation_started"], 1), "scores": report.get("scores")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--job", type=Path, metavar="TOKENIZER",
                        help="also run a whole local job; a folder holding the Qwen tokenizer's files")
    args = parser.parse_args()
    device = local_device()
    if not device.gpu:
        print("bench.gpu: no GPU here (torch sees no CUDA device, and DISTILL_DEVICE does not name one): nothing to "
              "measure. Run it on a machine with a GPU and torch's CUDA build.")
        return 0
    torch = prepare_torch()
    print(f"device {device.name}: {torch.cuda.get_device_name(device.name)}, {device.dtype}")
    for name in args.models:
        torch.cuda.reset_peak_memory_stats(device.name)
        model = random_model(name, device.name)
        rates = ", ".join(f"batch {b}: {generation(model, b, device.name):,.0f} tokens/s" for b in GENERATION_BATCHES)
        steps = ", ".join(f"batch {b}: {training_step(model, b, device.name):.3f} s" for b in TRAINING_BATCHES)
        peak = torch.cuda.max_memory_allocated(device.name) / 2**30
        print(f"{name}: generation {rates}; a training step {steps}; peak GPU memory {peak:.1f} GiB")
        del model
        torch.cuda.empty_cache()
    if args.job:
        print(f"a whole local job: {json.dumps(job(args.job))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
