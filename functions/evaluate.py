"""Service Bus trigger on the evaluation queue: score the teacher and the students on the job's validation rows
(shared.pipeline.evaluate); a deployment still starting sends the message again later, scheduled."""

import azure.functions as func

from shared import services, tracing
from shared.pipeline.evaluate import on_evaluation
from shared.queueing import decode_body

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="evaluations", connection="DistillServiceBus")
def evaluate(msg: func.ServiceBusMessage) -> None:
    with tracing.span(tracing.traceparent_of(msg)):  # continues the job's trace from the sender's span
        on_evaluation(services.current(), decode_body(msg))
