"""`shared.ports.BlobStore` on Azure Blob Storage (or Azurite): the blob `<container>/<name>` is that blob there.

Containers are created on the first write into them. Conditional writes use the service's own ETag conditions, so they
are as race-free as Azure is. Transfers go in chunks of at most 4 MiB, so no large blob is ever held whole in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobPrefix, BlobServiceClient, StorageErrorCode

from shared.ports import Blob, Conflict
from shared.storage import check_blob_path, check_conditions, check_folder, is_blob_path, is_container_name, replacing

CHUNK = 4 * 1024 * 1024
TRANSFER = {"max_single_put_size": CHUNK, "max_block_size": CHUNK, "max_single_get_size": CHUNK,
            "max_chunk_get_size": CHUNK}


class AzureBlobStore:
    """`shared.ports.BlobStore` on one storage account."""

    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service

    @classmethod
    def from_connection_string(cls, conn_str: str) -> AzureBlobStore:
        return cls(BlobServiceClient.from_connection_string(conn_str, **TRANSFER))

    @classmethod
    def from_account_url(cls, url: str, credential: Any = None) -> AzureBlobStore:
        """The account at `url`, signed in with `credential` or, by default, with DefaultAzureCredential."""
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(BlobServiceClient(url, credential=credential, **TRANSFER))

    def read(self, path: str) -> Blob | None:
        try:
            download = self._blob(path).download_blob()
            return Blob(download.readall(), download.properties.etag)
        except ResourceNotFoundError:
            return None

    def write(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        check_conditions(if_match, if_absent)
        blob = self._blob(path)
        if if_match is not None:
            return _write_if_match(blob, data, if_match)
        try:
            return self._in_container(blob, lambda: blob.upload_blob(data, overwrite=not if_absent)["etag"])
        except (ResourceExistsError, ResourceModifiedError) as error:
            raise Conflict(f"{path} already exists") from error

    def read_range(self, path: str, offset: int, length: int) -> bytes | None:
        blob = self._blob(path)
        try:
            return blob.download_blob(offset=offset, length=length).readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            if error.status_code == 416:  # the range starts at or past the blob's end
                return b""
            raise

    def download_to(self, path: str, dest: Path) -> bool:
        try:
            download = self._blob(path).download_blob()
        except ResourceNotFoundError:
            return False
        with replacing(dest) as out:
            download.readinto(out)
        return True

    def upload_from(self, path: str, src: Path, *, progress: Callable[[int, int | None], None] | None = None) -> str:
        """As the port says; `progress(bytes sent, total)` is called after each chunk."""
        blob = self._blob(path)

        def upload() -> str:
            with src.open("rb") as stream:
                return blob.upload_blob(stream, overwrite=True, progress_hook=progress)["etag"]

        return self._in_container(blob, upload)

    def list(self, prefix: str) -> Iterator[str]:
        container, slash, start = prefix.partition("/")
        if slash:
            containers = [container] if is_container_name(container) else []
        else:
            found = self.service.list_containers(name_starts_with=prefix or None)
            containers = sorted((item.name for item in found), key=lambda name: name + "/")
        for name in containers:
            yield from self._list_container(name, start)

    def folders(self, prefix: str) -> Iterator[str]:
        container, _, start = check_folder(prefix).partition("/")
        try:
            for item in self.service.get_container_client(container).walk_blobs(name_starts_with=start or None,
                                                                                delimiter="/"):
                if isinstance(item, BlobPrefix):
                    yield item.name[len(start):].rstrip("/")
        except ResourceNotFoundError:
            return

    def delete(self, path: str) -> bool:
        try:
            self._blob(path).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    def _blob(self, path: str) -> BlobClient:
        container, _, name = check_blob_path(path).partition("/")
        return self.service.get_blob_client(container, name)

    def _in_container(self, blob: BlobClient, upload: Callable[[], str]) -> str:
        """Run `upload`; when the container does not exist yet, create it and run `upload` again."""
        try:
            return upload()
        except ResourceNotFoundError as error:
            if error.error_code != StorageErrorCode.CONTAINER_NOT_FOUND:
                raise
        with suppress(ResourceExistsError):  # another writer created it first
            self.service.create_container(blob.container_name)
        return upload()

    def _list_container(self, container: str, start: str) -> Iterator[str]:
        try:
            for name in self.service.get_container_client(container).list_blob_names(name_starts_with=start or None):
                path = f"{container}/{name}"
                if is_blob_path(path):
                    yield path
        except ResourceNotFoundError:
            return


def _write_if_match(blob: BlobClient, data: bytes, etag: str) -> str:
    """Replace the blob only while its ETag is still `etag`; a missing blob matches no ETag."""
    try:
        return blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)["etag"]
    except (ResourceModifiedError, ResourceNotFoundError) as error:
        raise Conflict(f"{blob.container_name}/{blob.blob_name} has changed: its ETag is no longer {etag}") from error
