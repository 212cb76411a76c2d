"""Our system prompts as the task rules word them, for tests that send or check them."""

from shared.manifest.model import PromptSettings
from shared.tasks import Task
from shared.tasks.base import PromptStyle


def cot_system(task: Task) -> str:
    return task.rules.teacher_system(PromptStyle.CHAIN_OF_THOUGHT, PromptSettings(chain_of_thought=True))


def cod_system(words: int) -> str:
    settings = PromptSettings(chain_of_density=True, max_len_summary=words)
    return Task.SUMMARIZATION.rules.teacher_system(PromptStyle.CHAIN_OF_DENSITY, settings)
