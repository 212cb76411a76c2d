"""Service Bus trigger on the shard queue: the teacher labels one shard (shared.pipeline.label)."""

import azure.functions as func

from shared import services, tracing
from shared.pipeline.label import label_shard
from shared.queueing import decode_body

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="shards", connection="DistillServiceBus")
def label(msg: func.ServiceBusMessage) -> None:
    with tracing.span(tracing.traceparent_of(msg)):  # continues the job's trace from the sender's span
        label_shard(services.current(), decode_body(msg))
