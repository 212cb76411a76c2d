"""The five distillation job YAMLs that AzureML's public examples publish for its CLI, with the one change Distill
asks for (`api_key` becomes `api_key_setting`), pass `distill validate` and show the right request URL in
`distill preview`.

`published` writes each YAML afresh with the fields, names and URL form of the published ones; their data files are
the AzureML samples' own seed data beside the checkout, under the names the YAMLs give. The summarization example
names a training file the samples do not ship, which validation reports in one line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENDPOINT = "https://Meta-Llama-3-1-405B-Instruct-vkn.westus3.models.ai.azure.com/chat/completions"
REQUEST_URL = ENDPOINT.lower()  # a host name knows no case
EXAMPLES = {  # task: (the job name's middle, experiment name, what the prompt settings turn on)
    "nli": ("nli", "Distillation-NLI", "  enable_chain_of_thought: true\n"),
    "nlu_qa": ("nlu-qa", "Distillation-NLU-QA", "  enable_chain_of_thought: true\n"),
    "math": ("math", "Distillation-Math", "  enable_chain_of_thought: true\n"),
    "conversation": ("conversation", "Distillation-Conversation", ""),
    "summarization": ("summarization", "Distillation-summarization",
                      "  enable_chain_of_density: true\n  max_len_summary: 80\n"),
}


def published(task: str) -> str:
    """The published YAML for `task`, after the one change: the key's setting named instead of the key."""
    middle, experiment, prompt = EXAMPLES[task]
    temperature = 0.8 if task == "summarization" else 0.1
    max_tokens = 100 if task == "conversation" else 1024
    prompt_settings = f"prompt_settings:\n{prompt}" if prompt else ""
    return f"""type: distillation
name: "Distillation-{middle}-llama"
description: "Teach a small student with a big teacher's answers"
experiment_name: "{experiment}"
data_generation_type: label_generation
data_generation_task_type: {task}
training_data:
  type: uri_file
  path: ./train_{task}.jsonl
validation_data:
  type: uri_file
  path: ./validation_{task}.jsonl
teacher_model_endpoint_connection:
  type: serverless
  name: Meta-Llama-3-1-405B-Instruct-vkn
  endpoint: {ENDPOINT}
  api_key_setting: TEACHER_API_KEY
student_model: azureml://registries/azureml-meta/models/Meta-Llama-3.1-8B-Instruct/versions/2
outputs:
  registered_model:
    type: mlflow_model
    name: llama-{middle}-distilled
teacher_model_settings:
  inference_parameters:
    temperature: {temperature}
    max_tokens: {max_tokens}
    top_p: 0.95
  endpoint_request_settings:
    request_batch_size: 10
    min_endpoint_success_ratio: 0.7
{prompt_settings}hyperparameters:
  learning_rate_multiplier: "0.2"
  n_epochs: "5"
  batch_size: "2"
resources:
  instance_type: Standard_D2_v2
"""


@pytest.fixture
def example(shared_data: Path, tmp_path: Path):
    def make(task: str) -> Path:
        folder = tmp_path / task
        folder.mkdir()
        for split in ("train", "validation"):
            seed = shared_data / "seed" / task / f"{split}.jsonl"
            if seed.exists():  # the summarization samples have no training file
                shutil.copy(seed, folder / f"{split}_{task}.jsonl")
        (folder / f"distillation_{task}.yaml").write_text(published(task))
        return folder / f"distillation_{task}.yaml"

    return make


def distill(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("task", ["nli", "nlu_qa", "math", "conversation"])
def test_a_published_example_validates_and_previews_its_endpoints_request_url(task: str, example) -> None:
    yaml_file = example(task)
    checked = distill("validate", yaml_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1].startswith("OK: 2 files")
    shown = distill("preview", yaml_file, "--rows", "1")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"POST {REQUEST_URL}\n" in shown.stdout
    assert f"# job Distillation-{EXAMPLES[task][0]}-llama," in shown.stdout
    assert "Traceback" not in shown.stdout + shown.stderr


def test_the_published_summarization_example_names_its_missing_training_file_in_one_line(example) -> None:
    yaml_file = example("summarization")
    for command in ("validate", "preview"):
        done = distill(command, yaml_file)
        assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
        assert done.stdout.splitlines() == [
            f"{yaml_file}: training_data.path: ./train_summarization.jsonl: no such file",
            f"FAILED: {yaml_file} is not a valid manifest (1 problem)"]
