"""Service Bus trigger on the jobs queue: a message starts, cancels or resumes a job (shared.pipeline.job_requests).

A request that cannot be honoured is recorded with its reason and completed, so it is never delivered again."""

import logging

import azure.functions as func

from shared import services
from shared.pipeline.job_requests import on_job_request

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="jobs", connection="DistillServiceBus")
def job_requests(msg: func.ServiceBusMessage) -> None:
    if refused := on_job_request(services.current(), msg.get_body(), msg.message_id or ""):
        logging.getLogger(__name__).warning("refused: %s", refused)
