"""The audit log's append-only copy beside the state database, as a hash chain.

The database can be lost (a truncated file, a disk restored from an old snapshot, a stray ``rm``):
the controller's history must not go with it silently. Every audit entry is also appended, in the
transaction that writes it, to ``<state>.audit.jsonl``: one JSON line holding the entry, the hash
of the line before it and its own hash (sha256 over both). So

* a database with fewer entries than its copy has lost history (refused at open);
* a line edited, removed or reordered breaks the chain at that line;
* a torn last line (a crash mid-write) is a line that does not parse.

:func:`verify` reads the copy and reports every problem with its line number; it is what
``slimgate audit --verify`` prints. The copy is plain JSON lines, readable without slimgate.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64  # the "previous hash" of the first line


def chain_path(state: Path) -> Path:
    return state.with_name(state.name + ".audit.jsonl")


def line_hash(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


@dataclass
class Verification:
    """What the copy holds, and what is wrong with it (empty when the chain is intact)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    last_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(path: Path) -> Verification:
    """Walk the chain from its first line; a missing file is an empty, intact chain."""
    out = Verification()
    if not path.exists():
        return out
    with path.open("rb") as fh:
        lines = fh.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, raw in enumerate(lines, start=1):
        try:
            line = json.loads(raw)
            record, prev, own = line["record"], line["prev"], line["hash"]
        except (ValueError, KeyError, TypeError):
            out.problems.append(f"{path}:{n}: not a chain line (torn or edited)")
            break
        if prev != out.last_hash:
            out.problems.append(f"{path}:{n}: does not follow line {n - 1} (a line was removed or reordered)")
            break
        if line_hash(prev, record) != own:
            out.problems.append(f"{path}:{n}: its hash does not match its entry (the entry was edited)")
            break
        out.records.append(record)
        out.last_hash = own
    return out


def tail_hash(path: Path) -> str:
    """The hash of the copy's last line (GENESIS for an empty or missing copy)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            tail = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    except FileNotFoundError:
        return GENESIS
    return str(json.loads(tail)["hash"]) if tail else GENESIS


class AuditChain:
    """Appends to the copy; opened on an intact chain only (the store refuses a broken one).

    Several processes share one state (the controller, ``slimgate apply``, operator commands), so
    each append chains onto the file's last line as it is then, not as it was at open; the caller
    holds the database's write lock, so no one else appends meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, *records: dict[str, Any]) -> None:
        """Append ``records`` in one write, durable (fsync) before this returns; none: nothing."""
        if not records:
            return
        last, lines = tail_hash(self.path), []
        for record in records:
            own = line_hash(last, record)
            lines.append(json.dumps({"record": record, "prev": last, "hash": own}, default=str) + "\n")
            last = own
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
