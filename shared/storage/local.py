"""A folder standing in for the storage account: the blob `<container>/<name>` is the file `<root>/<container>/<name>`.

Every write makes a temporary file and renames it onto the blob's file. A blob's ETag record, a fresh random ETag and
the identity (inode, mtime, size) of the file it was written with, is an extended attribute of that file, set before
the rename, so a blob is one file. On a file system without user extended attributes the records are files in
`<root>/.meta/etags` instead, named by the hash of the blob's path (written before the rename). A file that no longer
matches its record (changed by hand, or replaced between a reader's two looks) gets an ETag derived from that identity
instead, which no writer ever hands out: at worst a conditional write then fails and is retried, and it never succeeds
against data its caller did not see.

Bookkeeping lives in `<root>/.meta`, which no container name can clash with (none starts with a dot): the temporary
files, and 256 lock files that blobs share by the hash of their path. Writes hold an exclusive `flock` on the blob's
lock file while they compare and replace, so conditional writes are race-free across threads and processes; reads take
no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from shared.ports import Blob, Conflict
from shared.storage import check_blob_path, check_conditions, check_folder, is_blob_path, is_container_name, replacing

CHUNK = 1024 * 1024
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
LOCK_STRIPE_CHARS = 2  # blob locks share 256 lock files: a lock is held for a rename, so sharing costs nothing
ETAG_ATTRIBUTE = "user.distill.etag"
_RECORD = struct.Struct("<QqQ")  # after the 16 bytes of the ETag: the file's inode, mtime (ns) and size


class LocalBlobStore:
    """`shared.ports.BlobStore` on a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._meta = self.root / ".meta"
        for folder in ("locks", "tmp"):
            (self._meta / folder).mkdir(parents=True, exist_ok=True)
        self._in_attributes = _has_user_attributes(self._meta / "tmp")
        if self._in_attributes:  # record files a store kept before it had attributes: their blobs get identity ETags
            shutil.rmtree(self._meta / "etags", ignore_errors=True)
        else:
            (self._meta / "etags").mkdir(exist_ok=True)

    def read(self, path: str) -> Blob | None:
        try:
            with self._file(path).open("rb") as src:
                return Blob(src.read(), self._etag(path, src.fileno()))
        except _MISSING:
            return None

    def write(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        check_conditions(if_match, if_absent)
        return self._put(path, lambda out: out.write(data), if_match, if_absent)

    def read_range(self, path: str, offset: int, length: int) -> bytes | None:
        try:
            with self._file(path).open("rb") as src:
                src.seek(offset)
                return src.read(length)
        except _MISSING:
            return None

    def download_to(self, path: str, dest: Path) -> bool:
        try:
            src = self._file(path).open("rb")
        except _MISSING:
            return False
        with src, replacing(dest) as out:
            shutil.copyfileobj(src, out, CHUNK)
        return True

    def upload_from(self, path: str, src: Path) -> str:
        def copy(out: BinaryIO) -> None:
            with src.open("rb") as stream:
                shutil.copyfileobj(stream, out, CHUNK)

        return self._put(path, copy)

    def list(self, prefix: str) -> Iterator[str]:
        containers = sorted(entry.name + "/" for entry in os.scandir(self.root) if _is_container(entry))
        for container in containers:  # each with its '/', which is how it sorts among the paths
            if container.startswith(prefix) or prefix.startswith(container):
                yield from _walk(self.root / container, container, prefix)

    def folders(self, prefix: str) -> Iterator[str]:
        folder = self.root / check_folder(prefix)
        try:
            entries = list(os.scandir(folder))
        except _MISSING:
            return
        yield from sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False)
                          and is_blob_path(f"{prefix.rstrip('/')}/{entry.name}/x"))

    def delete(self, path: str) -> bool:
        file = self._file(path)
        with self._locked(path):
            try:
                file.unlink()
            except _MISSING:
                return False
            if not self._in_attributes:
                self._record_file(path).unlink(missing_ok=True)
        return True

    def _file(self, path: str) -> Path:
        """The file of a checked path, refusing one that a symbolic link would lead elsewhere."""
        file = self.root / check_blob_path(path)
        if file.resolve() != file:
            raise ValueError(f"refused blob path {path!r}: it passes through a symbolic link")
        return file

    def _record_file(self, path: str) -> Path:
        """Where the blob's ETag record is kept when the file system has no user extended attributes."""
        return self._meta / "etags" / hashlib.sha256(path.encode()).hexdigest()

    def _put(self, path: str, fill: Callable[[BinaryIO], object], if_match: str | None = None,
             if_absent: bool = False) -> str:
        """Write a temporary file with `fill`, then, under the blob's lock, check the condition and rename it."""
        file = self._file(path)
        tmp = self._meta / "tmp" / uuid.uuid4().hex
        try:
            with tmp.open("xb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            with self._locked(path):
                self._check(path, file, if_match, if_absent)
                return self._commit(path, file, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        stripe = hashlib.sha256(path.encode()).hexdigest()[:LOCK_STRIPE_CHARS]  # a lock file per stripe, not per blob
        fd = os.open(self._meta / "locks" / stripe, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _check(self, path: str, file: Path, if_match: str | None, if_absent: bool) -> None:
        """Raise Conflict when the write's condition does not hold; call with the blob's lock held."""
        if if_match is None and not if_absent:
            return
        try:
            current = self._etag(path, file) if file.is_file() else None
        except _MISSING:
            current = None
        if if_absent and current is not None:
            raise Conflict(f"{path} already exists")
        if if_match is not None and current != if_match:
            raise Conflict(f"{path} has changed: its ETag is {current}, not {if_match}")

    def _commit(self, path: str, file: Path, tmp: Path) -> str:
        """Record a new ETag for `tmp`, then rename it onto `file`; call with the blob's lock held.

        The record comes first: a crash between the two steps leaves a record that matches no file, so the old blob
        gets an identity ETag (a spurious Conflict at worst), never the old ETag on new data.
        """
        etag = uuid.uuid4()
        record = etag.bytes + _RECORD.pack(*_identity(tmp.stat()))  # 40 bytes: it fits in an ext4 inode
        if self._in_attributes:
            os.setxattr(tmp, ETAG_ATTRIBUTE, record)
        else:
            staged = self._meta / "tmp" / uuid.uuid4().hex
            staged.write_bytes(record)
            os.replace(staged, self._record_file(path))
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, file)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as error:
            raise ValueError(f"{path!r} clashes with a folder or a file here: a folder cannot hold both "
                             "'x' and 'x/...' as blobs") from error
        return etag.hex

    def _etag(self, path: str, file: int | Path) -> str:
        """The blob's ETag, given the very file that was (or is being) read: an open descriptor, or the path of a
        file the caller's lock holds still."""
        info = os.stat(file)
        try:
            record = os.getxattr(file, ETAG_ATTRIBUTE) if self._in_attributes else self._record_file(path).read_bytes()
        except OSError:  # no record: a file put here by hand
            record = b""
        if len(record) == 16 + _RECORD.size and _RECORD.unpack(record[16:]) == _identity(info):
            return record[:16].hex()
        return "i-" + "-".join(f"{part:x}" for part in _identity(info))


def _has_user_attributes(folder: Path) -> bool:
    """Whether files in `folder` can carry user extended attributes (Linux on ext4, XFS, Btrfs, tmpfs...)."""
    probe = folder / f"probe-{uuid.uuid4().hex}"
    try:
        probe.touch()
        os.setxattr(probe, ETAG_ATTRIBUTE, b"{}")
        return True
    except (AttributeError, OSError):  # no os.setxattr (macOS, Windows), or a file system without them
        return False
    finally:
        probe.unlink(missing_ok=True)


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_ino, info.st_mtime_ns, info.st_size


def _is_container(entry: os.DirEntry[str]) -> bool:
    return entry.is_dir(follow_symlinks=False) and is_container_name(entry.name)


def _walk(folder: Path, base: str, prefix: str) -> Iterator[str]:
    """The blob paths in `folder` (whose path is `base`) that start with `prefix`, in lexical order.

    A sub-folder sorts as its name plus '/', which puts its blobs exactly where they belong among the files.
    """
    try:
        entries = list(os.scandir(folder))
    except _MISSING:
        return
    keyed = [(base + entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry) for entry in entries]
    for key, entry in sorted(keyed, key=lambda pair: pair[0]):
        if key.endswith("/"):
            if key.startswith(prefix) or prefix.startswith(key):
                yield from _walk(Path(entry.path), key, prefix)
        elif key.startswith(prefix) and entry.is_file(follow_symlinks=False) and is_blob_path(key):
            yield key
