"""Tests for the checkpoint stores: memory and SQLite behave the same; SQLite persists."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from esm.checkpoints import (
    MemoryCheckpointStore,
    SqliteCheckpointStore,
    open_checkpoint_store,
)
from esm.checkpoints.sqlite import SCHEMA_VERSION
from esm.errors import CheckpointError, ConfigError
from esm.model import Checkpoint

# A real Kinesis sequence number: 56 digits, far beyond float and int64 precision.
KINESIS_SEQUENCE = "49590338271490256608559692538361571095921575989136588898"

Store = MemoryCheckpointStore | SqliteCheckpointStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryCheckpointStore()
    else:
        s = SqliteCheckpointStore(tmp_path / "state" / "esm.db")
    async with s:
        yield s


@pytest.mark.anyio
async def test_load_of_unknown_mapping_is_empty(store: Store) -> None:
    assert await store.load("nothing-saved") == {}


@pytest.mark.anyio
async def test_save_then_load_round_trips(store: Store) -> None:
    await store.save("m1", "shardId-000000000000", Checkpoint("100"))
    await store.save("m1", "shardId-000000000001", Checkpoint(None))

    assert await store.load("m1") == {
        "shardId-000000000000": Checkpoint("100"),
        "shardId-000000000001": Checkpoint(None),
    }


@pytest.mark.anyio
async def test_save_overwrites_the_partition(store: Store) -> None:
    await store.save("m1", "s0", Checkpoint("100"))
    await store.save("m1", "s0", Checkpoint("250"))

    assert await store.load("m1") == {"s0": Checkpoint("250")}


@pytest.mark.anyio
async def test_finished_flag_is_kept(store: Store) -> None:
    await store.save("m1", "s0", Checkpoint("900", finished=True))
    await store.save("m1", "s1", Checkpoint("901", finished=False))

    loaded = await store.load("m1")
    assert loaded["s0"].finished is True
    assert loaded["s1"].finished is False


@pytest.mark.anyio
async def test_mappings_are_isolated(store: Store) -> None:
    await store.save("m1", "s0", Checkpoint("1"))
    await store.save("m2", "s0", Checkpoint("2"))

    assert await store.load("m1") == {"s0": Checkpoint("1")}
    assert await store.load("m2") == {"s0": Checkpoint("2")}


@pytest.mark.anyio
async def test_long_sequence_is_preserved_exactly(store: Store) -> None:
    await store.save("m1", "s0", Checkpoint(KINESIS_SEQUENCE))
    await store.save("m1", "s1", Checkpoint("000123"))

    loaded = await store.load("m1")
    assert loaded["s0"].sequence == KINESIS_SEQUENCE
    # Leading zeros survive too: the value is text, never parsed as a number.
    assert loaded["s1"].sequence == "000123"


@pytest.mark.anyio
async def test_delete_forgets_one_partition(store: Store) -> None:
    await store.save("m1", "s0", Checkpoint("1"))
    await store.save("m1", "s1", Checkpoint("2"))

    await store.delete("m1", "s0")
    await store.delete("m1", "never-saved")

    assert await store.load("m1") == {"s1": Checkpoint("2")}


@pytest.mark.anyio
async def test_concurrent_saves_from_many_tasks(store: Store) -> None:
    async def writer(task: int) -> None:
        for n in range(20):
            await store.save("m1", f"s{task}", Checkpoint(str(n), finished=n == 19))

    async with anyio.create_task_group() as tg:
        for task in range(8):
            tg.start_soon(writer, task)

    assert await store.load("m1") == {f"s{t}": Checkpoint("19", finished=True) for t in range(8)}


@pytest.mark.anyio
async def test_calls_after_close_raise(store: Store) -> None:
    await store.aclose()
    await store.aclose()  # closing twice is harmless

    with pytest.raises(CheckpointError):
        await store.load("m1")
    with pytest.raises(CheckpointError):
        await store.save("m1", "s0", Checkpoint("1"))


@pytest.mark.anyio
async def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "esm.db"
    async with SqliteCheckpointStore(path) as first:
        await first.save("m1", "s0", Checkpoint(KINESIS_SEQUENCE))
        await first.save("m1", "s1", Checkpoint("7", finished=True))

    async with SqliteCheckpointStore(path) as second:
        assert await second.load("m1") == {
            "s0": Checkpoint(KINESIS_SEQUENCE),
            "s1": Checkpoint("7", finished=True),
        }


@pytest.mark.anyio
async def test_sqlite_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "esm.db"
    async with SqliteCheckpointStore(path, clock=lambda: 1234.5) as store:
        await store.save("m1", "s0", Checkpoint(KINESIS_SEQUENCE, finished=True))
        await store.save("m1", "s1", Checkpoint(None))

    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT mapping_id, partition, sequence, typeof(sequence), finished, updated_at"
            " FROM checkpoints ORDER BY partition"
        ).fetchall()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()

    assert rows == [
        ("m1", "s0", KINESIS_SEQUENCE, "text", 1, 1234.5),
        ("m1", "s1", None, "null", 0, 1234.5),
    ]
    assert version == SCHEMA_VERSION
    assert journal == "wal"


@pytest.mark.anyio
async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "esm.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    async with SqliteCheckpointStore(path) as store:
        with pytest.raises(CheckpointError, match="newer"):
            await store.load("m1")


@pytest.mark.anyio
async def test_sqlite_wraps_errors(tmp_path: Path) -> None:
    not_a_database = tmp_path / "esm.db"
    not_a_database.write_bytes(b"this is not a SQLite file, it is long enough to have a header")

    async with SqliteCheckpointStore(not_a_database) as store:
        with pytest.raises(CheckpointError) as caught:
            await store.load("m1")
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert caught.value.retriable


@pytest.mark.anyio
async def test_sqlite_unusable_directory_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")

    async with SqliteCheckpointStore(blocker / "esm.db") as store:
        with pytest.raises(CheckpointError):
            await store.save("m1", "s0", Checkpoint("1"))
    # Not a matter of permissions: no hint about them.
    assert "fsGroup" not in str(await store_error(blocker / "esm.db"))


async def store_error(path: Path) -> CheckpointError:
    async with SqliteCheckpointStore(path) as store:
        with pytest.raises(CheckpointError) as caught:
            await store.load("m1")
    return caught.value


@pytest.mark.anyio
async def test_a_directory_esm_may_not_write_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a volume mounted without fsGroup looks like to esm's unprivileged user (the tests
    # may run as root, to whom every directory is writable).
    volume = tmp_path / "state"
    volume.mkdir()

    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr("esm.checkpoints.sqlite.sqlite3.connect", refuse)
    monkeypatch.setattr("esm.checkpoints.sqlite.os.access", lambda path, mode: Path(path) != volume)
    message = str(await store_error(volume / "esm.db"))
    assert message.startswith(f"checkpoint store {volume / 'esm.db'}: unable to open database file")
    assert f"may not write {volume}:" in message
    assert "securityContext.fsGroup" in message


@pytest.mark.anyio
async def test_save_cancelled_before_it_starts_writes_nothing(tmp_path: Path) -> None:
    async with SqliteCheckpointStore(tmp_path / "esm.db") as store:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.save("m1", "s0", Checkpoint("1"))
        assert await store.load("m1") == {}


@pytest.mark.anyio
async def test_save_cancelled_while_writing_still_lands(tmp_path: Path) -> None:
    # The clock is read inside the worker thread during the write: hold the write there.
    writing, release = threading.Event(), threading.Event()

    def held_clock() -> float:
        writing.set()
        release.wait(5)
        return 1.0

    async with SqliteCheckpointStore(tmp_path / "esm.db", clock=held_clock) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.save, "m1", "s0", Checkpoint("2"))
            await anyio.to_thread.run_sync(writing.wait, 5)
            tg.cancel_scope.cancel()
            release.set()

        assert await store.load("m1") == {"s0": Checkpoint("2")}


@pytest.mark.parametrize(
    ("backend", "expected"),
    [("sqlite", SqliteCheckpointStore), ("memory", MemoryCheckpointStore)],
)
def test_open_checkpoint_store_picks_the_backend(
    backend: str, expected: type[object], tmp_path: Path
) -> None:
    store = open_checkpoint_store(backend, str(tmp_path / "esm.db"))
    assert isinstance(store, expected)
    # Nothing is opened before first use.
    assert not (tmp_path / "esm.db").exists()


def test_open_checkpoint_store_rejects_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="redis"):
        open_checkpoint_store("redis", "unused")


@pytest.mark.anyio
async def test_sqlite_saves_made_before_close_land(tmp_path: Path) -> None:
    path = tmp_path / "esm.db"
    store = SqliteCheckpointStore(path)
    async with anyio.create_task_group() as tg:
        # Tasks start in order: the saves queue on the store before the close does.
        for n in range(5):
            tg.start_soon(store.save, "m1", f"s{n}", Checkpoint(str(n)))
        tg.start_soon(store.aclose)

    async with SqliteCheckpointStore(path) as reopened:
        assert len(await reopened.load("m1")) == 5
