"""Fine-tuners (`shared.ports.FineTuner`): AzureML fine-tuning jobs, and the local export-only stand-in.

Importing this package stays light: azure-ai-ml is imported only when an AzureML job is built or submitted.
"""

from shared.finetune.azureml import AzureMLFineTuner
from shared.finetune.export_only import ExportOnlyFineTuner

__all__ = ["AzureMLFineTuner", "ExportOnlyFineTuner"]
