"""The test teacher's Files and Batch API (`/v1/files`, `/v1/batches`), enough for the openai client's calls.

A batch is answered line by line with the teacher's own chat answers (faults queued with `inject` included: a
rate-limit or server-error fault becomes that line's error response). Its status reads `in_progress` for the first
`pending_polls` retrievals, then `completed`, with an output file (HTTP 200 lines) and an error file (the others).
Stdlib only, in memory.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from shared.testkit.responses import Response, error

if TYPE_CHECKING:
    from shared.testkit.teacher import FakeTeacher


class FakeBatches:
    def __init__(self, teacher: FakeTeacher, pending_polls: int = 1) -> None:
        self._teacher = teacher
        self.pending_polls = pending_polls
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, content)
        self.batches: dict[str, dict[str, Any]] = {}
        self._polls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @staticmethod
    def handles(path: str) -> bool:
        return "/files" in path or "/batches" in path

    def get(self, path: str) -> Response:
        parts = path.split("?")[0].rstrip("/").split("/")
        if parts[-1] == "content" and parts[-3] == "files" and parts[-2] in self.files:
            return Response(payload=None, raw=self.files[parts[-2]][1])
        if parts[-2] == "batches" and parts[-1] in self.batches:
            return Response(payload=self._poll(parts[-1]))
        if parts[-1] == "batches":  # the list, newest first
            with self._lock:
                listed = [dict(batch) for batch in reversed(self.batches.values())]
            return Response(payload={"object": "list", "data": listed, "has_more": False,
                                     "first_id": listed[0]["id"] if listed else None,
                                     "last_id": listed[-1]["id"] if listed else None})
        return error(404, f"no such path: {path}", "not_found")

    def post(self, path: str, content_type: str, raw: bytes) -> Response:
        endpoint = path.split("?")[0].rstrip("/")
        if endpoint.endswith("/files"):
            form = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
            fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
            purpose = str(fields["purpose"].get_content()).strip() if "purpose" in fields else ""
            data = fields["file"].get_payload(decode=True) if "file" in fields else b""
            return Response(payload=self._file(purpose, data, fields["file"].get_filename() or "upload.jsonl"))
        if endpoint.endswith("/batches"):
            body = json.loads(raw)
            if body.get("input_file_id") not in self.files:
                return error(400, "input_file_id does not name an uploaded file", "invalid_request_error")
            return Response(payload=self._create(body))
        return error(404, f"no such path: {path}", "not_found")

    def _file(self, purpose: str, data: bytes, name: str) -> dict[str, Any]:
        with self._lock:
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = (purpose, data)
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        lines = [json.loads(line) for line in self.files[body["input_file_id"]][1].splitlines() if line.strip()]
        output, errors = [], []
        for line in lines:
            response = self._teacher.respond(line["body"], {}, line["url"])
            result = {"id": f"batch_req_{next(self._ids)}", "custom_id": line["custom_id"],
                      "response": {"status_code": response.status, "request_id": "", "body": response.payload},
                      "error": None}
            (output if response.status == 200 else errors).append(json.dumps(result))
        with self._lock:
            batch_id = f"batch_{next(self._ids)}"
            batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                     "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                     "status": "in_progress", "created_at": int(time.time()), "metadata": body.get("metadata"),
                     "request_counts": {"total": len(lines), "completed": len(output), "failed": len(errors)}}
            self.batches[batch_id] = batch
            self._polls[batch_id] = 0
        batch["output_file_id"] = self._file("batch_output", "\n".join(output).encode(), "output.jsonl")["id"]
        batch["error_file_id"] = (self._file("batch_output", "\n".join(errors).encode(), "errors.jsonl")["id"]
                                  if errors else None)
        return {**batch, "status": "validating", "output_file_id": None, "error_file_id": None}

    def _poll(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            self._polls[batch_id] += 1
            batch = self.batches[batch_id]
            if self._polls[batch_id] <= self.pending_polls:
                return {**batch, "output_file_id": None, "error_file_id": None}
            batch["status"] = "completed"
            return dict(batch)
