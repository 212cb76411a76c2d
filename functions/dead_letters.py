"""Service Bus triggers on the dead-letter queues: a shard or completion that failed every delivery fails its job; an
evaluation that did ends the evaluation with the reason (shared.pipeline.dead_letters)."""

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


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="evaluations/$DeadLetterQueue",
                              connection="DistillServiceBus")
def evaluation_dead_letters(msg: func.ServiceBusMessage) -> None:
    handle("evaluations", msg)
