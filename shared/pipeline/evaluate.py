"""The evaluation step: once the fine-tune has trained a model, the teacher, the base student and the distilled student
are scored on the job's validation rows, and the job ends with the answer to "is the student good enough?".

The step is driven by messages on the evaluation queue. The first is sent by whoever records the fine-tune's end (a
run event, or the poll timer, which sends it again for a job still evaluating: the queue drops the repeat). Each
message looks at the deployments the evaluation needs (shared.ports.ModelDeployer): while one is still being made,
the message is sent again for later, scheduled, so no function waits on it; one that fails, or is not ready within
`evaluation.deploy_timeout_minutes`, ends the evaluation with the reason. Once every model is reachable, one handler
claims the scoring on the job record, asks the students (shared.students), writes `evaluation.jsonl` and the report,
ends the job `succeeded` with the scores, and removes the deployments (unless `evaluation.keep_endpoint`). A failed
evaluation ends the job `succeeded` too: the fine-tuned model is kept, and `evaluation.error` says what went wrong.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import redaction
from shared.evaluation import build_report, evaluation_items, points, row_results
from shared.jobs.blobs import now
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, JobState, read_record, update_record
from shared.manifest.load import stored_manifest
from shared.manifest.model import Manifest, TeacherAuth, TeacherKind, TeacherSettings
from shared.pipeline import events
from shared.pipeline.messages import evaluation_message
from shared.ports import Deployment
from shared.reasons import Reason
from shared.services import Services

if TYPE_CHECKING:
    from shared.students import Reach

log = logging.getLogger(__name__)

KEY_SETTING = "DISTILL_DEPLOYMENT_KEY"  # where a deployment's key is handed to the client (in memory only)
LOCAL_TIMEOUT_SECONDS = 600.0  # a model served on a busy CPU answers slowly, and a local server does not hang up
MAX_FAILED_SHARE = 0.1  # a student whose calls fail on more of the rows than this has no score: the evaluation fails


def wants_evaluation(manifest: Manifest) -> bool:
    """Whether a job whose fine-tune trained a model goes on to the evaluation."""
    return manifest.student_access != "none"


def request_evaluation(services: Services, record: JobRecord | None) -> None:
    """Send the evaluation's first message for a job that is evaluating (safe to repeat: the queue drops repeats)."""
    if record is not None and record.state is JobState.EVALUATING:
        services.queue.send(services.settings.evaluation_queue, [evaluation_message(record)])


@dataclass(frozen=True, slots=True)
class Target:
    """A student to ask: its role, the model, and how it is reached (deployed for the evaluation, or at a URL)."""

    role: str  # "base" or "distilled"
    model: str
    endpoint: TeacherSettings | None = None  # the URL the manifest gives; None: deployed by the deployer


def targets(manifest: Manifest, record: JobRecord) -> list[Target]:
    """The students this job's evaluation asks: the distilled one (deployed, or at `evaluation.endpoint`), and the
    base one at `evaluation.base_endpoint`, or, for a student that is a model on this machine, deployed alike."""
    evaluation, found = manifest.evaluation, []
    distilled = record.finetune.output_model if record.finetune else None
    if distilled and manifest.student_access == "endpoint":
        found.append(Target("distilled", distilled, endpoint_settings(
            manifest, evaluation.endpoint, evaluation.key_setting, evaluation.model or model_name(distilled))))
    elif distilled and manifest.student_access == "serverless":
        found.append(Target("distilled", distilled))
    base = manifest.student.model
    if evaluation.base_endpoint:
        found.append(Target("base", base, endpoint_settings(manifest, evaluation.base_endpoint,
                                                            evaluation.base_key_setting, model_name(base))))
    elif manifest.student.backend == "local" and manifest.student_access == "serverless":
        found.append(Target("base", base))
    return found


def endpoint_settings(manifest: Manifest, url: str | None, key_setting: str | None, model: str) -> TeacherSettings:
    """An endpoint the manifest names, as the chat client's settings (its kind from the URL, as a teacher's)."""
    return TeacherSettings(url=url, key_setting=key_setting, model=model, **calls(manifest))


def calls(manifest: Manifest, least_timeout: float = 0.0) -> dict[str, Any]:
    """The timeout and retries of a student's calls (`evaluation.timeout_seconds`, `evaluation.max_retries`)."""
    return {"timeout_seconds": max(manifest.evaluation.timeout_seconds, least_timeout),
            "max_retries": manifest.evaluation.max_retries}


def model_name(model: str) -> str:
    """The name sent as a request's model: a registry id's model name, else the model as given."""
    return model.split("/models/", 1)[1].split("/", 1)[0] if "/models/" in model else model


def on_evaluation(services: Services, body: dict[str, Any]) -> str | None:
    """Handle one evaluation message; returns the job id when the evaluation ended in this call."""
    job = str(body.get("job", ""))
    paths = JobPaths(services.settings.jobs_container, job)
    record = read_record(services.store, paths) if job else None
    if record is None or record.state is not JobState.EVALUATING or body.get("attempt") != record.attempt:
        return None  # over already (a repeat or a late message), or another attempt's
    manifest = stored_manifest(services.store, paths)
    wanted = targets(manifest, record)
    try:
        deployments = deploy(services, job, [t for t in wanted if t.endpoint is None])
    except ValueError as refused:
        return end_with_error(services, paths, manifest, str(refused))
    if failed := next((d for d in deployments.values() if d.state == "failed"), None):
        return end_with_error(services, paths, manifest, f"the deployment {failed.name} failed: {failed.error}")
    update_record(services.store, paths, lambda r: r.deployments_seen({k: d.name for k, d in deployments.items()}))
    if pending := [d.name for d in deployments.values() if d.state != "ready"]:
        if not body.get("polls"):
            tell(services, job, f"job {job}: deploying {', '.join(pending)} for the evaluation")
        waited = now() - (record.evaluation or {}).get("started", now())
        if waited > manifest.evaluation.deploy_timeout_minutes * 60:
            return end_with_error(services, paths, manifest, f"the deployment {', '.join(pending)} was not ready "
                                  f"after {manifest.evaluation.deploy_timeout_minutes:g} minutes "
                                  "(evaluation.deploy_timeout_minutes)")
        polls = int(body.get("polls", 0)) + 1
        later = evaluation_message(record, polls, now() + services.settings.evaluation_poll_seconds)
        services.queue.send(services.settings.evaluation_queue, [later])
        return None
    claim = f"{record.attempt}/{body.get('polls', 0)}"
    claimed = update_record(services.store, paths,
                            lambda r: r.claim_evaluation(claim, services.settings.evaluation_claim_seconds))
    if (claimed.evaluation or {}).get("claim") != claim or claimed.state is not JobState.EVALUATING:
        return None  # another handler is scoring
    outcome = score(services, paths, manifest, record, wanted, deployments)
    update_record(services.store, paths, lambda r: r.evaluated(outcome, claim))
    if "error" in outcome or not manifest.evaluation.keep_endpoint:
        remove(services, job, deployments)
    events.flush(services, job)
    return job


def deploy(services: Services, job: str, wanted: list[Target]) -> dict[str, Deployment]:
    """Each target to deploy, as its deployment stands (deploying it when it is not there yet)."""
    if not wanted:
        return {}
    if (deployer := services.deployer) is None:
        raise ValueError("no deployer is configured here to deploy the fine-tuned model; give evaluation.endpoint")
    found = {target.role: deployer.deploy(job, target.role, target.model) for target in wanted}
    for deployment in found.values():
        if deployment.key:
            redaction.remember(deployment.key)
    return found


def score(services: Services, paths: JobPaths, manifest: Manifest, record: JobRecord, wanted: list[Target],
          deployments: dict[str, Deployment]) -> dict[str, Any]:
    """Ask the students, write `evaluation.jsonl` and the report; the job record's `evaluation` (scores, or an
    error that names what failed)."""
    from shared.report import write_report
    from shared.students import ask
    from shared.teacher.replies import TeacherConfigError

    started = time.monotonic()
    items, mode = evaluation_items(services.store, paths, manifest, manifest.evaluation.max_rows)
    answers: dict[str, list[str | None]] = {"teacher": [item.teacher_answer for item in items]}
    models = {"teacher": manifest.teacher.model}
    tokens, failed, notes, timings = {}, {}, [], {}
    limit = manifest.task.rules.answer_tokens(manifest.prompt, manifest.inference.max_tokens)  # what it learnt to give
    for target in sorted(wanted, key=lambda t: t.role):  # base first, then distilled
        tell(services, paths.job, f"job {paths.job}: asking the {target.role} student {target.model} "
                                  f"{len(items)} validation rows")
        begun = time.monotonic()
        try:
            asked = ask(reach_of(services, manifest, target, deployments.get(target.role)), items, limit)
        except TeacherConfigError as err:
            asked = None
            problem = f"the {target.role} student cannot be asked: {err}"
        else:
            problem = (f"the {target.role} student's endpoint failed on {asked.failed} of {len(items)} rows (first: "
                       f"{asked.failures[0]})") if asked.failed > MAX_FAILED_SHARE * len(items) else None
        if problem and target.role == "distilled":
            return {"error": redaction.redact(problem)}
        if problem or asked is None:
            notes.append(redaction.redact(f"{problem}; it is left out"))
            continue
        answers[target.role], models[target.role] = asked.replies, target.model
        tokens[target.role] = {"prompt": asked.prompt_tokens, "completion": asked.completion_tokens}
        if asked.failed:
            failed[target.role] = asked.failed
        timings[f"{target.role}_seconds"] = round(time.monotonic() - begun, 1)
    scores = {role: points(manifest, items, replies) for role, replies in answers.items()}
    report = build_report(paths.job, manifest, mode, items, answers, scores, models)
    timings["total_seconds"] = round(time.monotonic() - started, 1)
    report.update(tokens=tokens, timings=timings, max_new_tokens=limit,
                  **({"failed_calls": failed} if failed else {}), **({"notes": notes} if notes else {}))
    if record.references:  # the labels the student trained on, against the rows' reference answers
        dropped = (record.filtered or {}).get(Reason.DISAGREES.value, 0)
        report["labels"] = {**record.references, "dropped": dropped}
    lines = (json.dumps(line, ensure_ascii=False) + "\n" for line in row_results(items, answers, scores))
    services.store.write(paths.file("evaluation.jsonl"), redaction.redact("".join(lines)).encode("utf-8"))
    write_report(services.store, paths, report)
    outcome = {"scores": report["scores"], "rows": len(items), "mode": mode, "metric": report["metric"],
               "tokens": tokens, "report": paths.file("report.md")}
    if "agreement" in report:
        outcome["agreement"] = report["agreement"]
    if manifest.evaluation.keep_endpoint and deployments:
        outcome["kept"] = {role: d.name for role, d in deployments.items()}
    return outcome


def reach_of(services: Services, manifest: Manifest, target: Target, deployment: Deployment | None) -> Reach:
    """How the student's chat client reaches it: a URL the manifest names, or its deployment."""
    from shared.students import Reach

    if target.endpoint is not None:
        return Reach(target.endpoint, services.environ)
    assert deployment is not None and deployment.url
    if deployment.kind == TeacherKind.LOCAL:
        settings = TeacherSettings(kind=TeacherKind.LOCAL, model=target.model, **calls(manifest, LOCAL_TIMEOUT_SECONDS))
        return Reach(settings, {}, deployment.url, deployment.in_flight)
    settings = TeacherSettings(kind=TeacherKind(deployment.kind), url=deployment.url, model=model_name(target.model),
                               auth=TeacherAuth.KEY, key_setting=KEY_SETTING, **calls(manifest))
    return Reach(settings, {KEY_SETTING: deployment.key or ""})


def tell(services: Services, job: str, what: str) -> None:
    """Say that a long step begins: in the log, and on the local progress line."""
    log.info(what)
    if services.progress is not None:
        services.progress.step(job, what)


def end_with_error(services: Services, paths: JobPaths, manifest: Manifest, reason: str) -> str:
    """End the evaluation with a readable reason, the deployments removed; the job succeeds with its model kept."""
    record = read_record(services.store, paths)
    if record is not None:
        remove(services, paths.job, [t.role for t in targets(manifest, record) if t.endpoint is None])
    update_record(services.store, paths, lambda r: r.evaluated({"error": redaction.redact(reason)}))
    log.warning("job %s: evaluation failed: %s", paths.job, reason)
    events.flush(services, paths.job)
    return paths.job


def remove(services: Services, job: str, roles: Iterable[str]) -> None:
    """Delete the evaluation's deployments of these roles (safe to repeat)."""
    if (deployer := services.deployer) is not None:
        for role in roles:
            deployer.delete(job, role)
