"""HTTP GET /api/dashboard/...: the job dashboard (shared.dashboard), for people signed in with Entra ID."""

import azure.functions as func

from shared import services
from shared.pipeline.dashboard import signed_in_page

bp = func.Blueprint()


@bp.route(route="dashboard/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    page = signed_in_page(services.current(), req.url, req.route_params.get("path") or "", dict(req.params),
                          dict(req.headers))
    return func.HttpResponse(page.body, status_code=page.status, headers=page.all_headers())
