"""The local stand-in for a serverless deployment: a model served on this machine (shared.local.model_server) for the
evaluation step, started without waiting for it and stopped when the step removes it or the run ends."""

from __future__ import annotations

from shared.local.model_server import ModelServer, in_flight
from shared.local.models import ModelUnavailable, model_folder
from shared.ports import Deployment


class LocalModelDeployer:
    """A `ModelDeployer` whose deployments are model servers of this process."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, str], tuple[str, ModelServer]] = {}  # (job, role) → (model, its server)

    def deploy(self, job: str, role: str, model: str) -> Deployment:
        name = f"{job} {role} model server"
        if (job, role) not in self._servers:
            try:
                folder = model_folder(model)
            except ModelUnavailable as err:
                raise ValueError(f"the {role} model {model} cannot be served here: {err}") from None
            self._servers[(job, role)] = (model, ModelServer(folder))
        served, server = self._servers[(job, role)]
        if served != model:
            return Deployment(name, "failed", kind="local", error=f"it serves {served}, not {model}")
        state, why = server.state()
        return Deployment(name, state, url=server.base_url if state == "ready" else None, kind="local", error=why,
                          in_flight=in_flight())

    def delete(self, job: str, role: str) -> None:
        if found := self._servers.pop((job, role), None):
            found[1].stop()

    def close(self) -> None:
        """Stop every server still running."""
        for job, role in list(self._servers):
            self.delete(job, role)
