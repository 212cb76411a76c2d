"""Calling a teacher. One adapter module per kind of endpoint implements the `shared.ports.Teacher` port
(openai_compatible, azure_ai, azure_openai, local_model); `factory` picks one from the manifest and wraps it in
retries and rate limiting (`resilient`) and the response cache (`cache`). Provider batch mode is `batch`."""
