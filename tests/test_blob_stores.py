"""One contract for both blob stores: the local folder, and Azure Blob Storage as Azurite emulates it."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.ports import Blob, BlobStore, Conflict
from shared.storage import check_blob_path
from shared.storage import local as local_storage
from shared.storage.azure_blob import AzureBlobStore
from shared.storage.local import LocalBlobStore

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(params=["local", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "account")
    return AzureBlobStore.from_connection_string(request.getfixturevalue("azurite_connection_string"))


@pytest.fixture
def container() -> str:
    """A container name of this test's own (Azurite lives for the whole session)."""
    return f"t{uuid.uuid4().hex[:16]}"


def increment(store: BlobStore, path: str, times: int) -> None:
    """Add one to the counter blob `times` times by compare-and-swap, retrying each lost race."""
    for _ in range(times):
        while True:
            blob = store.read(path)
            assert blob is not None
            try:
                store.write(path, str(int(blob.data) + 1).encode(), if_match=blob.etag)
                break
            except Conflict:
                continue


def increment_in_own_process(root: str, path: str, times: int) -> None:
    increment(LocalBlobStore(Path(root)), path, times)


def test_read_of_a_missing_blob_is_none(store: BlobStore, container: str) -> None:
    assert store.read(f"{container}/missing.json") is None  # no such container yet
    store.write(f"{container}/present.json", b"{}")
    assert store.read(f"{container}/missing.json") is None


def test_write_then_read_round_trips_bytes_and_etag(store: BlobStore, container: str) -> None:
    data = bytes(range(256)) * 3
    etag = store.write(f"{container}/jobs/a/status.json", data)
    blob = store.read(f"{container}/jobs/a/status.json")
    assert blob is not None
    assert (blob.data, blob.etag) == (data, etag)


def test_names_that_need_url_quoting_round_trip(store: BlobStore, container: str) -> None:
    names = ["sp ace.txt", "100%.txt", "a%20b.txt", "q?uery#frag.json", "ünï/cödé.txt", "dir/.hidden", "a+b=c&d"]
    for name in names:
        store.write(f"{container}/{name}", name.encode())
    for name in names:
        blob = store.read(f"{container}/{name}")
        assert blob is not None and blob.data == name.encode()
    assert list(store.list(f"{container}/")) == sorted(f"{container}/{name}" for name in names)


def test_every_write_changes_the_etag_even_with_the_same_bytes(store: BlobStore, container: str) -> None:
    path = f"{container}/same.txt"
    etags = {store.write(path, b"same") for _ in range(3)}
    assert len(etags) == 3
    blob = store.read(path)
    assert blob is not None and blob.etag in etags


def test_if_match_writes_only_over_that_etag(store: BlobStore, container: str) -> None:
    path = f"{container}/status.json"
    first = store.write(path, b"1")
    second = store.write(path, b"2", if_match=first)
    assert second != first
    with pytest.raises(Conflict):
        store.write(path, b"3", if_match=first)
    blob = store.read(path)
    assert blob is not None and (blob.data, blob.etag) == (b"2", second)


def test_if_match_on_a_missing_blob_is_a_conflict(store: BlobStore, container: str) -> None:
    with pytest.raises(Conflict):
        store.write(f"{container}/missing.json", b"1", if_match="some-etag")
    store.write(f"{container}/other.json", b"{}")
    with pytest.raises(Conflict):
        store.write(f"{container}/missing.json", b"1", if_match="some-etag")
    assert store.read(f"{container}/missing.json") is None


def test_if_absent_writes_only_once(store: BlobStore, container: str) -> None:
    path = f"{container}/claim.lock"
    etag = store.write(path, b"first", if_absent=True)
    with pytest.raises(Conflict):
        store.write(path, b"second", if_absent=True)
    blob = store.read(path)
    assert blob is not None and (blob.data, blob.etag) == (b"first", etag)


def test_both_conditions_at_once_are_refused(store: BlobStore, container: str) -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        store.write(f"{container}/x", b"", if_match="etag", if_absent=True)


def test_compare_and_swap_from_eight_threads_loses_no_increment(store: BlobStore, container: str) -> None:
    path = f"{container}/counter"
    store.write(path, b"0")
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(increment, store, path, 25) for _ in range(8)]:
            future.result()
    blob = store.read(path)
    assert blob is not None and blob.data == b"200"


def test_upload_from_and_download_to_stream_five_megabytes(store: BlobStore, container: str, tmp_path: Path) -> None:
    src, dest = tmp_path / "src.bin", tmp_path / "dest.bin"
    src.write_bytes(os.urandom(FIVE_MB))
    etag = store.upload_from(f"{container}/big.bin", src)  # also the container's first write
    assert store.download_to(f"{container}/big.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    blob = store.read(f"{container}/big.bin")
    assert blob is not None and blob.etag == etag
    src.write_bytes(b"smaller")
    assert store.upload_from(f"{container}/big.bin", src) != etag
    assert store.download_to(f"{container}/big.bin", dest)
    assert dest.read_bytes() == b"smaller"


def test_download_of_a_missing_blob_is_false_and_writes_nothing(store: BlobStore, container: str,
                                                                tmp_path: Path) -> None:
    dest = tmp_path / "out" / "dest.bin"
    dest.parent.mkdir()
    assert store.download_to(f"{container}/missing.bin", dest) is False
    assert list(dest.parent.iterdir()) == []


def test_delete_removes_a_blob_once_and_frees_its_name(store: BlobStore, container: str) -> None:
    path = f"{container}/gone.json"
    store.write(path, b"old")
    assert store.delete(path) is True
    assert store.read(path) is None and list(store.list(f"{container}/")) == []
    assert store.delete(path) is False  # safe to repeat
    assert store.delete(f"{container}-none/x") is False
    store.write(path, b"new", if_absent=True)
    assert store.read(path).data == b"new"


def test_list_gives_the_paths_under_a_prefix_in_lexical_order(store: BlobStore, container: str) -> None:
    names = ["b", "a/c/d", "ab", "a0", "a/b", "a-b"]
    for name in names:
        store.write(f"{container}/{name}", b"x")
    store.write(f"{container}-x/y", b"x")
    everything = [f"{container}/{name}" for name in ("a-b", "a/b", "a/c/d", "a0", "ab", "b")]
    assert list(store.list(f"{container}/")) == everything
    assert list(store.list(f"{container}/a")) == everything[:-1]
    assert list(store.list(f"{container}/a/")) == everything[1:3]
    assert list(store.list(f"{container}/zz")) == []
    assert list(store.list(container)) == [f"{container}-x/y", *everything]  # '-' sorts before '/'
    assert list(store.list(f"{container}-nothing/")) == []


def test_read_range_pages_through_a_blob(store: BlobStore, container: str) -> None:
    store.write(f"{container}/big.jsonl", b"0123456789" * 3)
    assert store.read_range(f"{container}/big.jsonl", 0, 4) == b"0123"
    assert store.read_range(f"{container}/big.jsonl", 25, 100) == b"56789"  # fewer at the end
    assert store.read_range(f"{container}/big.jsonl", 30, 10) == b""  # none past it
    assert store.read_range(f"{container}/missing.jsonl", 0, 10) is None


def test_folders_are_the_names_directly_below_a_prefix(store: BlobStore, container: str) -> None:
    for path in ("jobs/b/status.json", "jobs/a/status.json", "jobs/a/shards/00000.jsonl", "jobs/c.json",
                 "other/d/x"):
        store.write(f"{container}/{path}", b"{}")
    assert list(store.folders(f"{container}/jobs/")) == ["a", "b"]  # not the file c.json, nor a's sub-folder
    assert list(store.folders(container)) == ["jobs", "other"]
    assert list(store.folders(f"{container}/none/")) == []
    with pytest.raises(ValueError, match="folder"):
        list(store.folders(f"{container}/jobs"))  # a path that does not end in '/' names no folder


def test_azure_store_from_account_url_with_a_key_or_the_default_credential(azurite_connection_string: str,
                                                                           container: str) -> None:
    account = AzureBlobStore.from_connection_string(azurite_connection_string).service
    store = AzureBlobStore.from_account_url(account.url, credential=account.credential)  # the account key
    etag = store.write(f"{container}/x", b"1")
    assert store.read(f"{container}/x") == Blob(b"1", etag)
    default = AzureBlobStore.from_account_url("https://example.blob.core.windows.net")
    assert type(default.service.credential).__name__ == "DefaultAzureCredential"


UNSAFE_PATHS = [
    "",
    "/etc/passwd",
    "ok1",
    "ok1/../../etc/passwd",
    "ok1/a/../b",
    "ok1/./a",
    "ok1//a",
    "ok1/a/",
    "ok1/a.",
    "ok1/a\\b",
    "ok1\\..\\..\\x",
    "ok1/a\x00b",
    "ok1/line\nbreak",
    "ok1/%2e%2e/x",
    "ok1/%2E%2E%2Fetc",
    "ok1/a%2fb",
    "ok1/a%5cb",
    "ok1/%00",
    "ok1/%252e%252e/x",
    "..%2f..%2fetc/passwd",
    "Upper/x",
    "a_b/x",
    "ok1/" + "x" * 1025,
]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_unsafe_paths_are_refused_before_any_io(store: BlobStore, path: str, tmp_path: Path) -> None:
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="refused blob path"):
        store.read(path)
    with pytest.raises(ValueError, match="refused blob path"):
        store.write(path, b"x")
    with pytest.raises(ValueError, match="refused blob path"):
        store.upload_from(path, tmp_path / "file.bin")
    with pytest.raises(ValueError, match="refused blob path"):
        store.download_to(path, tmp_path / "dest.bin")
    assert list(store.list("ok1")) == []
    assert not (tmp_path / "dest.bin").exists()


@pytest.mark.parametrize("path", ["ok1/a", "ok1/dir/.hidden", "ok1/a..b", "ok1/100%.txt", "ok1/a%20b", "abc/d-e/f_g"])
def test_ordinary_paths_are_accepted(path: str) -> None:
    assert check_blob_path(path) == path


def test_local_writes_nothing_outside_its_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "account")
    for path in UNSAFE_PATHS:
        with pytest.raises(ValueError):
            store.write(path, b"x")
    assert [entry.name for entry in tmp_path.iterdir()] == ["account"]
    assert [entry.name for entry in (tmp_path / "account").iterdir()] == [".meta"]


def test_local_refuses_a_symbolic_link_out_of_its_root(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s")
    store = LocalBlobStore(tmp_path / "account")
    store.write("ok1/placeholder", b"")
    (tmp_path / "account" / "ok1" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="symbolic link"):
        store.read("ok1/link")
    assert list(store.list("ok1/")) == ["ok1/placeholder"]


def test_local_keeps_its_bookkeeping_out_of_the_listing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "account")
    store.write("jobs/a", b"1", if_absent=True)
    store.write("jobs/a", b"2")
    assert list(store.list("")) == ["jobs/a"]
    assert (tmp_path / "account" / "jobs" / "a").read_bytes() == b"2"


def etag_records(root: Path, monkeypatch: pytest.MonkeyPatch, *, in_attributes: bool) -> LocalBlobStore:
    """A local store keeping ETag records in extended attributes, or in record files as where there are none."""
    if not in_attributes:
        monkeypatch.setattr(local_storage, "_has_user_attributes", lambda folder: False)
    elif not local_storage._has_user_attributes(root.parent):
        pytest.skip("this file system has no user extended attributes")
    return LocalBlobStore(root)


@pytest.mark.parametrize("attributes", [True, False], ids=["extended attributes", "record files"])
def test_local_takes_a_file_put_in_its_folder_by_hand_as_a_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                attributes: bool) -> None:
    store = etag_records(tmp_path / "account", monkeypatch, in_attributes=attributes)
    store.write("uploads/data.jsonl", b"old")
    file = tmp_path / "account" / "uploads" / "data.jsonl"
    file.write_bytes(b"changed by hand")  # in place: the ETag record no longer matches the file
    blob = store.read("uploads/data.jsonl")
    assert blob is not None and blob.data == b"changed by hand"
    etag = store.write("uploads/data.jsonl", b"next", if_match=blob.etag)
    with pytest.raises(Conflict):
        store.write("uploads/data.jsonl", b"stale", if_match=blob.etag)
    assert store.read("uploads/data.jsonl") == Blob(b"next", etag)


def test_local_refuses_a_blob_that_clashes_with_a_folder(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "account")
    store.write("jobs/a/b", b"1")
    with pytest.raises(ValueError, match="clashes"):
        store.write("jobs/a", b"2")
    with pytest.raises(ValueError, match="clashes"):
        store.write("jobs/a/b/c", b"3")
    assert store.read("jobs/a") is None


def test_local_compare_and_swap_from_two_processes_loses_no_increment(tmp_path: Path) -> None:
    root = tmp_path / "account"
    LocalBlobStore(root).write("jobs/counter", b"0")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(increment_in_own_process, [(str(root), "jobs/counter", 50)] * 2)
    blob = LocalBlobStore(root).read("jobs/counter")
    assert blob is not None and blob.data == b"100"


@pytest.mark.parametrize("attributes", [True, False], ids=["extended attributes", "record files"])
def test_local_keeps_one_file_per_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attributes: bool) -> None:
    """With extended attributes a blob is its file alone; without them, its file and an ETag record."""
    store = etag_records(tmp_path, monkeypatch, in_attributes=attributes)
    for i in range(300):
        store.write(f"cache/{i:03d}.json", b"{}", if_absent=True)
    meta = tmp_path / ".meta"
    records = list((meta / "etags").iterdir()) if (meta / "etags").exists() else []
    assert len(records) == (0 if attributes else 300)
    assert len(list((meta / "locks").iterdir())) <= 256  # lock files are shared, not one per blob
    assert not list((meta / "tmp").iterdir())
    blob = store.read("cache/007.json")
    assert blob is not None and store.write("cache/007.json", b"[]", if_match=blob.etag)
    with pytest.raises(Conflict):
        store.write("cache/007.json", b"stale", if_match=blob.etag)
    assert store.delete("cache/007.json") and store.read("cache/007.json") is None
