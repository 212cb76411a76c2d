"""Service Bus trigger on the shard queue: the teacher labels one shard."""

import azure.functions as func

from shared import services
from shared.pipeline.label import label_shard
from shared.queueing import decode_body

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="shards", connection="DistillServiceBus")
def teacher(msg: func.ServiceBusMessage) -> None:
    label_shard(services.current(), decode_body(msg))
