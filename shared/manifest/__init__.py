"""The job manifest: its schema and value-free validation (`model`), secrets refused (`secrets`), AzureML's
distillation YAML read as a manifest (`azureml`), and manifest files read from disk or storage (`load`)."""
