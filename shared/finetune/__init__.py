"""The Azure fine-tuner (`shared.ports.FineTuner` on AzureML fine-tuning jobs) and the AzureML run events that tell
how a fine-tune ended. The local mode's fine-tuners are in `shared.local` (trainer, export_only).

Importing this package stays light: azure-ai-ml is imported only when an AzureML job is built or submitted.
"""
