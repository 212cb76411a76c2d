"""Blob trigger (Event Grid source) on the input container: a landed manifest starts its job (pipeline step
ingest)."""

import azure.functions as func

from shared import services
from shared.pipeline import ingest as step

bp = func.Blueprint()


@bp.blob_trigger(arg_name="blob", path="input/{name}", connection="DistillStorage", source=func.BlobSource.EVENT_GRID)
def ingest(blob: func.InputStream) -> None:
    step.ingest(services.current(), blob.name or "")
