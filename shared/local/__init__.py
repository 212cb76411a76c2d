"""Code for the embedded local mode only: the runtime, the model server, training, packaged models, progress and
the report. Never imported by the Azure Functions app, and left out of its deployment package (.funcignore)."""
