"""Event Grid trigger for AzureML's run events, and a timer that polls unfinished fine-tunes as a fallback
(shared.pipeline.run_events)."""

import azure.functions as func

from shared import services
from shared.finetune.run_events import from_functions_event
from shared.pipeline.run_events import on_run_event, poll_unfinished

bp = func.Blueprint()


@bp.event_grid_trigger(arg_name="event")
def run_events(event: func.EventGridEvent) -> None:
    on_run_event(services.current(), from_functions_event(event))


@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *")
def poll_finetunes(timer: func.TimerRequest) -> None:
    poll_unfinished(services.current())
