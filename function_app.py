"""The Distill Functions app: blob upload → ingest → shards → teacher → aggregate → fine-tune → run events.

Each blueprint in `functions/` is one trigger; the logic lives in `shared/`. `distill run` drives these very
functions on one machine (shared.local.runtime).
"""

import azure.functions as func

from functions import aggregate, dead_letters, ingest, job_events, status, teacher

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (ingest.bp, teacher.bp, aggregate.bp, job_events.bp, status.bp, dead_letters.bp):
    app.register_functions(blueprint)
