"""HTTP GET /api/jobs/{job}: a job's record (function-level auth)."""

import azure.functions as func

from shared import services
from shared.pipeline.status import job_status

bp = func.Blueprint()


@bp.route(route="jobs/{job}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status(req: func.HttpRequest) -> func.HttpResponse:
    code, body = job_status(services.current(), req.route_params.get("job", ""))
    return func.HttpResponse(body, status_code=code, mimetype="application/json")
