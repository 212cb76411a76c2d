"""Live checks against real Azure Storage; they run only when real credentials are set (never in CI here)."""

import os
import uuid

import pytest

from shared.storage.azure_blob import AzureBlobStore

LIVE_STORAGE = os.environ.get("DISTILL_LIVE_STORAGE_CONNECTION")


@pytest.mark.live
@pytest.mark.skipif(not LIVE_STORAGE, reason="live: set DISTILL_LIVE_STORAGE_CONNECTION to reach a real account")
def test_round_trip_and_compare_and_swap_on_a_real_storage_account() -> None:
    from shared.ports import Conflict

    store = AzureBlobStore.from_connection_string(LIVE_STORAGE or "")
    path = f"distill-live/{uuid.uuid4().hex}.json"
    etag = store.write(path, b"1", if_absent=True)
    assert store.read(path).data == b"1"
    store.write(path, b"2", if_match=etag)
    with pytest.raises(Conflict):
        store.write(path, b"3", if_match=etag)
