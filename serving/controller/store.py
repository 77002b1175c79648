"""Persistence of the controller: candidate states, rolled-back revisions and the audit log, in SQLite.

This module owns the on-disk format of what the controller must not forget across a restart:
each candidate's :class:`~.candidate.CandidateState`, every (variant, revision) ever rolled back
(so that a revision stays out even after other revisions were tracked in between), and an
append-only audit log of every weight change and why it was made.

Every write is one transaction, so a state and the audit entries that explain it land together
or not at all. The audit table refuses UPDATE and DELETE with triggers, so no code path (nor a
stray ``sqlite3`` shell session) can rewrite history; the triggers guard rows, not the file. The
file is guarded by its append-only copy (:mod:`.audit_chain`): each entry also goes, in its
transaction, to a hash-chained JSON-lines file beside it. Opening checks the database's integrity
and that it holds every entry its copy holds: a corrupt, truncated or lost database is refused
with a :class:`StoreError` saying what to do, and never silently replaced by an empty one. Every
SQLite or file error is a one-line :class:`StoreError`. The store is safe to share between
threads of one process.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serving.controller.audit_chain import AuditChain, chain_path, verify
from serving.controller.candidate import CandidateState, Phase


def default_state_path() -> Path:
    """The controller's state and audit file: ``$SLIMGATE_STATE``, else the per-user default."""
    return Path(os.environ.get("SLIMGATE_STATE", Path.home() / ".local/share/slimgate/controller.db"))


SCHEMA_VERSION = 2
_APPEND_ONLY = "audit log is append-only"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS candidates (
    variant TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rolled_back (
    variant TEXT NOT NULL,
    revision TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (variant, revision)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    variant TEXT NOT NULL,
    revision TEXT NOT NULL,
    weights_before TEXT NOT NULL,
    weights_after TEXT NOT NULL,
    signals TEXT NOT NULL,
    reason TEXT NOT NULL,
    config_revision TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;
"""


class StoreError(RuntimeError):
    """The store cannot be used: a newer schema, a row this version cannot read, a corrupt, lost or
    unwritable file. The message is one line saying which file and what to do."""


@dataclass(frozen=True)
class AuditEntry:
    """One audit record. ``weights_*``: the whole split (variant -> percent) around the change."""

    actor: str
    action: str
    variant: str
    revision: str
    weights_before: Mapping[str, int]
    weights_after: Mapping[str, int]
    signals: Mapping[str, Any]
    reason: str
    at: float
    # The gateway config revision the change produced (what `slimgate status` shows).
    config_revision: str = ""
    id: int | None = field(default=None, compare=False)


def _record(e: AuditEntry) -> dict[str, Any]:
    """An entry as the append-only copy stores it (plain JSON)."""
    return {
        **asdict(e),
        "weights_before": dict(e.weights_before),
        "weights_after": dict(e.weights_after),
        "signals": dict(e.signals),
    }


def _dump_state(s: CandidateState) -> str:
    return json.dumps({**asdict(s), "phase": s.phase.value}, sort_keys=True)


def _load_state(text: str) -> CandidateState:
    try:
        d = json.loads(text)
        return CandidateState(**{**d, "phase": Phase(d["phase"])})
    except (ValueError, TypeError, KeyError) as err:
        raise StoreError(f"unreadable candidate state {text!r}: {err}") from None


class StateStore:
    """Candidate states, rolled-back revisions and the audit log in one SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._pending: list[dict[str, Any]] = []  # the open transaction's entries, for the copy
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE takes the write
            # lock up front, so two processes never interleave a read-modify-write).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"{self.path}: cannot open the controller state ({err})") from None
        try:
            self._open()
        except sqlite3.Error as err:
            self._db.close()
            raise StoreError(
                f"{self.path}: not a readable controller state ({err}); it was left as it is: restore it "
                f"from a backup, or move it away to start a new history ({chain_path(self.path)} keeps "
                "the old audit log)"
            ) from None
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version}; this slimgate reads {SCHEMA_VERSION}")
        copy_path = chain_path(self.path)
        # Compared under the write lock: another process's entry is in the copy from just before
        # its commit, and would otherwise look like history the database lost.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            copy, held = verify(copy_path), self._audit_rows()
        finally:
            self._db.execute("ROLLBACK")
        if not copy.intact:
            raise StoreError(
                f"{copy.problems[0]}; the audit log's copy is broken, so {self.path} was not opened "
                f"(`slimgate audit --verify --state {self.path}` lists every problem)"
            )
        if len(copy.records) > held:
            # Checked before anything is written: a lost database is never replaced by an empty one.
            raise StoreError(
                f"{self.path} holds {held} audit entries but its append-only copy {copy_path} holds "
                f"{len(copy.records)}: the database lost history and was left as it is; restore it from "
                "a backup, or move both files away to start a new history"
            )
        # WAL lets a CLI read the audit log while the controller writes.
        self._db.execute("PRAGMA journal_mode=WAL")
        if version == 1:  # schema 1 had no config revision per entry and no meta table
            self._db.execute("ALTER TABLE audit ADD COLUMN config_revision TEXT NOT NULL DEFAULT ''")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._chain = AuditChain(copy_path)
        if len(copy.records) < held:
            with self._tx():  # one process starts the copy, the others find it started
                copied = len(verify(copy_path).records)
                if copied < held and copy_path.exists():
                    raise StoreError(
                        f"{copy_path} holds {copied} audit entries but {self.path} holds {held}: the "
                        "append-only copy lost its last entries; restore it from a backup"
                    )
                if copied < held:  # a store from before the copy existed: start it with its history
                    self._pending.extend(_record(entry) for entry in self.entries())

    def _audit_rows(self) -> int:
        has = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
        ).fetchone()
        return 0 if has is None else int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._pending = []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    # The copy first: a commit that then fails leaves it one entry ahead, which the
                    # next open reports; the other order could lose an entry from the copy.
                    self._chain.append(*self._pending)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                raise  # a row this code should never write: a bug, not the storage
            except (sqlite3.Error, OSError) as err:
                raise StoreError(f"{self.path}: cannot write the controller state ({err})") from None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the state's lock file: one controller tick, operator action or apply at a time."""
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- candidate states ----------------------------------------------------------------------
    def load(self, variant: str) -> CandidateState | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM candidates WHERE variant = ?", (variant,)).fetchone()
        return None if row is None else _load_state(row[0])

    def all(self) -> list[CandidateState]:
        with self._lock:
            rows = self._db.execute("SELECT state FROM candidates ORDER BY variant").fetchall()
        return [_load_state(r[0]) for r in rows]

    def save(self, state: CandidateState, audit: Iterable[AuditEntry] = ()) -> list[AuditEntry]:
        """Store ``state`` (and remember its revision if rolled back) with ``audit`` in one transaction."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO candidates (variant, revision, state) VALUES (?, ?, ?) "
                "ON CONFLICT (variant) DO UPDATE SET revision = excluded.revision, state = excluded.state",
                (state.variant, state.revision, _dump_state(state)),
            )
            if state.phase is Phase.ROLLED_BACK:
                db.execute(
                    "INSERT OR IGNORE INTO rolled_back (variant, revision, at, reason) VALUES (?, ?, ?, ?)",
                    (state.variant, state.revision, state.since, state.last_reason),
                )
            return [self._insert(db, e) for e in audit]

    def rolled_back(self, variant: str) -> frozenset[str]:
        """Every revision of ``variant`` that was ever rolled back (for :func:`~.decide.track`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT revision FROM rolled_back WHERE variant = ?", (variant,)
            ).fetchall()
        return frozenset(r[0] for r in rows)

    # -- the audit log -------------------------------------------------------------------------
    def _insert(self, db: sqlite3.Connection, e: AuditEntry) -> AuditEntry:
        cur = db.execute(
            "INSERT INTO audit (at, actor, action, variant, revision, weights_before, weights_after, "
            "signals, reason, config_revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.at,
                e.actor,
                e.action,
                e.variant,
                e.revision,
                json.dumps(dict(e.weights_before), sort_keys=True),
                json.dumps(dict(e.weights_after), sort_keys=True),
                json.dumps(dict(e.signals), sort_keys=True),
                e.reason,
                e.config_revision,
            ),
        )
        stored = AuditEntry(**{**asdict(e), "id": cur.lastrowid})
        self._pending.append(_record(stored))
        return stored

    def append(
        self,
        actor: str,
        action: str,
        variant: str,
        revision: str,
        weights_before: Mapping[str, int],
        weights_after: Mapping[str, int],
        signals: Mapping[str, Any],
        reason: str,
        at: float,
        config_revision: str = "",
    ) -> AuditEntry:
        """Add one entry to the audit log; there is no way to change or remove it afterwards."""
        entry = AuditEntry(
            actor,
            action,
            variant,
            revision,
            weights_before,
            weights_after,
            signals,
            reason,
            at,
            config_revision,
        )
        with self._tx() as db:
            return self._insert(db, entry)

    # -- config revisions seen -----------------------------------------------------------------
    def seen_config(self) -> tuple[str, dict[str, int]] | None:
        """The last gateway config revision and weights recorded (by the controller or an apply)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        if row is None:
            return None
        d = json.loads(row[0])
        return d["revision"], d["weights"]

    def see_config(
        self, revision: str, weights: Mapping[str, int], audit: Iterable[AuditEntry] = ()
    ) -> list[AuditEntry]:
        """Remember the gateway's current config revision and weights, with its audit entries, atomically."""
        value = json.dumps({"revision": revision, "weights": dict(weights)}, sort_keys=True)
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('config', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (value,),
            )
            return [self._insert(db, e) for e in audit]

    def entries(self, since: float | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Entries at or after ``since`` (clock seconds), oldest first; ``limit`` keeps the newest ones."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        where, args = ("WHERE at >= ?", [since]) if since is not None else ("", [])
        query = f"SELECT * FROM audit {where} ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        with self._lock:
            cur = self._db.execute(query, args)
            names = [c[0] for c in cur.description]
            rows = cur.fetchall()
        out = []
        for row in reversed(rows):
            d = dict(zip(names, row, strict=True))
            for key in ("weights_before", "weights_after", "signals"):
                d[key] = json.loads(d[key])
            out.append(AuditEntry(**d))
        return out
