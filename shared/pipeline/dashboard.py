"""The dashboard in the Functions app: served only to people signed in through App Service authentication.

The app declares Entra ID sign-in in infra with anonymous requests let through (so the function-key status route and
the platform's webhooks keep working), and each dashboard request checks the principal that App Service puts in the
`X-MS-CLIENT-PRINCIPAL-ID` header. The platform sets that header itself and drops one a client sends, but only while
authentication is on, so the dashboard refuses to serve at all when `WEBSITE_AUTH_ENABLED` says it is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from shared.dashboard.routes import Response, problem, respond
from shared.services import Services

PRINCIPAL_HEADER = "x-ms-client-principal-id"
AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"  # set by App Service to "True" while its authentication is on
SIGN_IN = "/.auth/login/aad"


def signed_in_page(services: Services, url: str, path: str, query: Mapping[str, str],
                   headers: Mapping[str, str]) -> Response:
    """The dashboard's answer to a request the app received at `url` (`path`: the part below the dashboard's root)."""
    if services.environ.get(AUTH_ENABLED, "").lower() != "true":
        return problem(403, "The dashboard needs sign-in", "App Service authentication is off for this app, so the "
                        "dashboard is not served: deploy infra/ with dashboardClientId set (see docs/dashboard.md).")
    address = urlsplit(url)
    if not {key.lower(): value for key, value in headers.items()}.get(PRINCIPAL_HEADER):
        back = quote(address.path + (f"?{address.query}" if address.query else ""), safe="/")
        return Response(302, b"", "text/plain", {"Location": f"{SIGN_IN}?post_login_redirect_uri={back}"})
    if not path and not address.path.endswith("/"):  # the root's relative links need its trailing slash
        return Response(301, b"", "text/plain", {"Location": address.path + "/"})
    return respond(services.store, services.settings.jobs_container, path, query)
