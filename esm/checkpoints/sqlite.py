"""A checkpoint store in a SQLite file: checkpoints survive restarts and crashes."""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.to_thread

from esm.errors import CheckpointError
from esm.model import Checkpoint

_T = TypeVar("_T")

# Entry i upgrades the schema from version i to i + 1; each runs in the opening transaction.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE checkpoints (
        mapping_id TEXT NOT NULL,
        partition  TEXT NOT NULL,
        sequence   TEXT NULL,
        finished   INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (mapping_id, partition)
    )
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)
"""The layout this code writes, kept in the file's `PRAGMA user_version`."""

# Milliseconds another process holding the write lock may keep us waiting before saving fails.
_BUSY_TIMEOUT_MS = 5_000

_UPSERT = """
    INSERT INTO checkpoints (mapping_id, partition, sequence, finished, updated_at)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (mapping_id, partition) DO UPDATE SET
        sequence = excluded.sequence,
        finished = excluded.finished,
        updated_at = excluded.updated_at
"""


class SqliteCheckpointStore:
    """Checkpoints in one SQLite file, table `checkpoints`, one row per (mapping, partition).

    The file is opened on first use (its parent directories created), in WAL mode with
    `synchronous=FULL`: WAL lets readers such as `sqlite3 esm-state.db` look while esm
    writes, and FULL syncs the log on every commit, so a `save` that returned survives a
    power loss, not just a process crash. Sequence numbers are stored as TEXT: Kinesis
    sequence numbers have up to 56 digits and would lose precision as numbers.

    sqlite3 blocks, so every call runs in a worker thread; a limiter of one makes those
    calls take turns on the single connection.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        # ":memory:" is SQLite's name for a private in-memory database, not a file name.
        self._target = self.path if self.path == ":memory:" else Path(self.path).expanduser()
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = anyio.CapacityLimiter(1)

    async def load(self, mapping_id: str) -> dict[str, Checkpoint]:
        """Every partition's checkpoint saved for `mapping_id` (empty when none).

        :raises CheckpointError: the file cannot be opened or read.
        """
        return await self._run(self._load, mapping_id)

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        """Durably record `checkpoint` for `partition`; returns once it is on disk.

        Once started, a save completes even if the caller is cancelled meanwhile (the
        worker thread is not abandoned), so a shutdown does not lose a save under way.

        :raises CheckpointError: the file cannot be opened or written.
        """
        await self._run(self._save, mapping_id, partition, checkpoint)

    async def delete(self, mapping_id: str, partition: str) -> None:
        """Forget `partition`'s checkpoint; nothing happens when there is none.

        :raises CheckpointError: the file cannot be opened or written.
        """
        await self._run(self._delete, mapping_id, partition)

    async def aclose(self) -> None:
        """Close the file once the calls made before this one are done; later calls raise
        `CheckpointError`. Closing twice is harmless."""
        # Shielded: an abandoned close would leave the connection (and WAL) open.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    async def __aenter__(self) -> SqliteCheckpointStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        return await anyio.to_thread.run_sync(
            functools.partial(self._guarded, func, *args), limiter=self._limiter
        )

    # Everything below runs in a worker thread, one call at a time.

    def _guarded(self, func: Callable[..., _T], *args: object) -> _T:
        # Checked here, in turn, rather than before the hop to the thread: a save made just
        # before aclose still lands, and only calls queued after it fail.
        if self._closed:
            raise CheckpointError(f"the checkpoint store {self.path} is closed")
        try:
            return func(self._connection(), *args)
        except sqlite3.Error as exc:
            raise CheckpointError(
                f"checkpoint store {self.path}: {exc}{self._permission_hint()}"
            ) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if isinstance(self._target, Path):
            try:
                self._target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointError(
                    f"checkpoint store {self.path}: {exc}{self._permission_hint()}"
                ) from exc
        # check_same_thread is off because anyio may pick a different worker thread for each
        # call; the limiter guarantees only one of them uses the connection at a time.
        # isolation_level=None: statements commit on their own, transactions are explicit.
        conn = sqlite3.connect(self._target, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # INVARIANT: a checkpoint that save() reported stored is on disk. NORMAL would
            # only sync at WAL checkpoints, losing the last commits to a power cut.
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _permission_hint(self) -> str:
        """Why the file cannot be written when the reason is permissions, else "": SQLite's
        own message ("unable to open database file") does not say."""
        if not isinstance(self._target, Path):
            return ""
        # The nearest existing directory on the way to the file.
        directory = self._target.parent
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        if not directory.is_dir():
            return ""
        file_writable = not self._target.exists() or os.access(self._target, os.R_OK | os.W_OK)
        if os.access(directory, os.W_OK | os.X_OK) and file_writable:
            return ""
        return (
            f" (esm runs as uid {os.getuid()}, which may not write {directory}"
            f"{'' if file_writable else ' or the file'}: give it that directory; in "
            "Kubernetes, set the pod's securityContext.fsGroup so that volumes are writable "
            "by esm's group)"
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE takes the write lock before reading the version, so two processes
        # opening the same new file cannot both create the table.
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise CheckpointError(
                    f"checkpoint store {self.path} has schema version {version}, newer than "
                    f"this esm understands ({SCHEMA_VERSION}); upgrade esm"
                )
            for target in range(version, SCHEMA_VERSION):
                conn.execute(_MIGRATIONS[target])
                conn.execute(f"PRAGMA user_version = {target + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _load(conn: sqlite3.Connection, mapping_id: str) -> dict[str, Checkpoint]:
        rows = conn.execute(
            "SELECT partition, sequence, finished FROM checkpoints WHERE mapping_id = ?",
            (mapping_id,),
        ).fetchall()
        return {
            partition: Checkpoint(sequence=sequence, finished=bool(finished))
            for partition, sequence, finished in rows
        }

    def _save(
        self, conn: sqlite3.Connection, mapping_id: str, partition: str, checkpoint: Checkpoint
    ) -> None:
        conn.execute(
            _UPSERT,
            (mapping_id, partition, checkpoint.sequence, int(checkpoint.finished), self._clock()),
        )

    @staticmethod
    def _delete(conn: sqlite3.Connection, mapping_id: str, partition: str) -> None:
        conn.execute(
            "DELETE FROM checkpoints WHERE mapping_id = ? AND partition = ?",
            (mapping_id, partition),
        )

    def _close(self) -> None:
        self._closed = True
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
