"""Blob trigger (Event Grid source) on the input container: a landed manifest starts its job."""

import azure.functions as func

from shared import services
from shared.pipeline.ingest import ingest

bp = func.Blueprint()


@bp.blob_trigger(arg_name="blob", path="input/{name}", connection="DistillStorage", source=func.BlobSource.EVENT_GRID)
def ingest_blob(blob: func.InputStream) -> None:
    ingest(services.current(), blob.name or "")
