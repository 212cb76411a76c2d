"""The Distill Functions app: blob upload or job request → ingest → shards → label → aggregate → fine-tune → run
events → evaluate; and the job record (`status`) and dashboard (`dashboard`) over HTTP.

Each blueprint in `functions/` is one trigger, named for the pipeline step in `shared/pipeline/` it calls. `distill run`
drives these very functions on one machine (shared.local.runtime).
"""

import azure.functions as func

from functions import aggregate, dashboard, dead_letters, evaluate, ingest, job_requests, label, run_events, status

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (ingest.bp, job_requests.bp, label.bp, aggregate.bp, run_events.bp, evaluate.bp, status.bp,
                  dashboard.bp, dead_letters.bp):
    app.register_functions(blueprint)
