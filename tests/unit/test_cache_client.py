"""The cache keeps one redis-py client per connection pool instead of building one per call, and the
kept client serves every thread of a process and a forked child as a new one would."""

import os
import threading
import uuid

import pytest
from django.core.cache import cache

pytestmark = pytest.mark.services


@pytest.fixture
def keys():
    made: list[str] = []

    def key() -> str:
        made.append(f"client-test:{uuid.uuid4().hex}")
        return made[-1]

    yield key
    cache.delete_many(made)


def test_every_cache_call_uses_the_same_client_of_its_pool() -> None:
    backend = cache._cache
    client = backend.get_client()
    assert backend.get_client("some-key") is client
    assert backend.get_client(write=True).connection_pool is backend._get_connection_pool(True)
    assert backend.get_client(write=True) is backend.get_client(write=True)


def test_threads_share_the_kept_client_and_each_reads_its_own_values(keys) -> None:
    mine = [keys() for _ in range(16)]
    wrong: list[tuple[str, object]] = []

    def work(key: str, n: int) -> None:
        for round_ in range(50):
            cache.set(key, {"n": n, "round": round_}, timeout=30)
            if (read := cache.get(key)) != {"n": n, "round": round_}:
                wrong.append((key, read))

    threads = [threading.Thread(target=work, args=(key, n)) for n, key in enumerate(mine)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert cache.get_many(mine) == {key: {"n": n, "round": 49} for n, key in enumerate(mine)}


def test_a_forked_child_reads_through_the_kept_client_on_connections_of_its_own(keys) -> None:
    key = keys()
    cache.set(key, {"from": "parent"}, timeout=30)
    assert cache.get(key) == {"from": "parent"}  # the parent's pool holds a connection now
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            cache.set(key, {"from": "child", "read": cache.get(key)}, timeout=30)
            os.write(writer, b"ok")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 16)
    os.waitpid(child, 0)
    os.close(reader)
    assert answer == b"ok"
    assert cache.get(key) == {"from": "child", "read": {"from": "parent"}}
