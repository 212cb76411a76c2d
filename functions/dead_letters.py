"""Service Bus triggers on the dead-letter queues: a message that failed every delivery fails its job."""

import azure.functions as func

from shared import services
from shared.pipeline.dead_letters import on_dead_letter

bp = func.Blueprint()


def handle(queue: str, msg: func.ServiceBusMessage) -> None:
    on_dead_letter(services.current(), queue, msg, msg.dead_letter_reason,
                   msg.dead_letter_error_description, msg.delivery_count)


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="shards/$DeadLetterQueue", connection="DistillServiceBus")
def shard_dead_letters(msg: func.ServiceBusMessage) -> None:
    handle("shards", msg)


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="completions/$DeadLetterQueue",
                              connection="DistillServiceBus")
def completion_dead_letters(msg: func.ServiceBusMessage) -> None:
    handle("completions", msg)
