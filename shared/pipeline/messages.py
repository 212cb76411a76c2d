"""The queue messages about one shard: its work order ("shard") and its completion ("done")."""

from __future__ import annotations

from shared import tracing
from shared.ports import OutgoingMessage


def shard_message(kind: str, job: str, shard: int, round_: int = 0) -> OutgoingMessage:
    """A message whose id derives from job, kind, shard and round, so the queue drops repeats; a round resumed with
    a higher budget (shared.pipeline.budget) gets new ids, which its duplicate detection lets through."""
    body = {"job": job, "shard": shard, **({"round": round_} if round_ else {})}
    suffix = f"/r{round_}" if round_ else ""
    return OutgoingMessage(body, message_id=f"{job}/{kind}/{shard}{suffix}", properties=tracing.message_properties())
