"""Service Bus trigger on the completion queue: record a finished shard; the last one assembles the dataset."""

import azure.functions as func

from shared import services, tracing
from shared.pipeline.aggregate import on_completion
from shared.queueing import decode_body

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="completions",
                              connection="DistillServiceBus")
def aggregate(msg: func.ServiceBusMessage) -> None:
    with tracing.span(tracing.traceparent_of(msg)):  # continues the job's trace from the sender's span
        on_completion(services.current(), decode_body(msg))
