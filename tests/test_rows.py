"""Row identity: SHA-256 of the canonical input plus the occurrence number."""

import hashlib

from shared.rows import RowIds, canonical_input


def test_row_id_is_the_sha256_of_the_canonical_input_and_its_occurrence() -> None:
    messages = [{"role": "system", "content": "Sé breve."}, {"role": "user", "content": "2+2?"}]
    canonical = canonical_input(messages)
    assert canonical == '[{"content":"Sé breve.","role":"system"},{"content":"2+2?","role":"user"}]'
    ids = RowIds()
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert [ids.assign(messages) for _ in range(3)] == [f"{expected}-0", f"{expected}-1", f"{expected}-2"]


def test_canonical_input_ignores_key_order_and_extra_message_fields() -> None:
    a = [{"content": "hi", "role": "user"}]
    b = [{"role": "user", "content": "hi", "name": "x"}]
    assert canonical_input(a) == canonical_input(b)
    assert canonical_input(a) != canonical_input([{"role": "user", "content": "hi "}])
