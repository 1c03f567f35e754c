"""Sharding covers every item exactly once."""

import pytest

from deeprestore.errors import DeepRestoreError
from deeprestore.sharding import parse_shard, shard


@pytest.mark.parametrize("items", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_cover_every_item_exactly_once(items, count):
    parts = [shard(range(items), f"{index}/{count}") for index in range(count)]
    assert sorted(item for part in parts for item in part) == list(range(items))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_no_shard_keeps_everything_in_order():
    assert shard(["b", "a", "c"]) == ["b", "a", "c"]


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "0/0"])
def test_malformed_shards_are_refused(text):
    with pytest.raises(DeepRestoreError, match="expected I/N"):
        parse_shard(text)
