"""SQLite persistence: states survive a restart, rollbacks are remembered, the audit log is append-only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.controller.candidate import CandidateState, Phase, Policy
from serving.controller.decide import abort, step, track
from serving.controller.rules import Outcome
from serving.controller.store import SCHEMA_VERSION, AuditEntry, StateStore, StoreError


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "controller.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    with StateStore(db_path) as s:
        yield s


def candidate(variant: str = "tiny", revision: str = "tiny@1#aa") -> CandidateState:
    return track(None, variant, revision, Policy(), 100.0, weight=5)[0]


def entry(at: float, action: str = "advance", **kw: object) -> AuditEntry:
    fields = {
        "actor": "controller",
        "action": action,
        "variant": "tiny",
        "revision": "tiny@1#aa",
        "weights_before": {"base": 95, "tiny": 5},
        "weights_after": {"base": 75, "tiny": 25},
        "signals": {"error_rate<=0.05": "pass"},
        "reason": "2 passing intervals in a row at 5%",
        "at": at,
    }
    return AuditEntry(**{**fields, **kw})


def args(e: AuditEntry) -> dict[str, object]:
    """The keyword arguments of ``append`` that would write ``e``."""
    return {k: v for k, v in vars(e).items() if k != "id"}


def test_state_round_trip_and_restart(db_path: Path) -> None:
    state = step(candidate(), {"x": Outcome.PASS}, Policy(), 160.0)[0]
    other = candidate("small", "small@3#cc")
    with StateStore(db_path) as s:
        assert s.load("tiny") is None and s.all() == []
        s.save(state)
        s.save(other)
        assert s.load("tiny") == state
    with StateStore(db_path) as s:  # a new process opening the same file
        assert s.load("tiny") == state and s.load("tiny").phase is Phase.PROGRESSING
        assert s.all() == [other, state]  # by variant name
        newer = step(state, {"x": Outcome.PASS}, Policy(), 220.0)[0]
        s.save(newer)
        assert s.load("tiny") == newer and len(s.all()) == 2


def test_rolled_back_revisions_are_remembered_across_revisions_and_restarts(db_path: Path) -> None:
    policy = Policy()
    with StateStore(db_path) as s:
        first = abort(candidate(), 200.0)[0]
        s.save(first)
        # Revision 2 replaces revision 1 as the variant's state...
        s.save(track(first, "tiny", "tiny@2#bb", policy, 300.0)[0])
    with StateStore(db_path) as s:
        assert s.load("tiny").revision == "tiny@2#bb"
        assert s.rolled_back("tiny") == {"tiny@1#aa"} and s.rolled_back("small") == frozenset()
        # ...and when the config returns to revision 1, it is refused.
        state, actions = track(
            s.load("tiny"), "tiny", "tiny@1#aa", policy, 400.0, rolled_back=s.rolled_back("tiny")
        )
        assert state.phase is Phase.ROLLED_BACK and actions[0].weight == 0


def test_save_writes_state_and_audit_in_one_transaction(store: StateStore) -> None:
    state = candidate()
    bad = entry(1.0, reason=None)  # NOT NULL violation inside the transaction
    with pytest.raises(sqlite3.IntegrityError):
        store.save(state, [entry(1.0), bad])
    assert store.load("tiny") is None and store.entries() == []
    saved = store.save(state, [entry(1.0), entry(2.0)])
    assert [e.id for e in saved] == [1, 2]
    assert store.load("tiny") == state and len(store.entries()) == 2


def test_audit_append_and_read_back(store: StateStore) -> None:
    first = store.append(**args(entry(10.0)))
    assert first.id == 1
    store.append(
        "operator:ana",
        "rollback",
        "tiny",
        "tiny@1#aa",
        {"base": 75, "tiny": 25},
        {"base": 100, "tiny": 0},
        {},
        "operator abort",
        20.0,
    )
    store.append("controller", "advance", "small", "small@3#cc", {}, {}, {"nan": float("nan")}, "r", 30.0)
    got = store.entries()
    assert [e.at for e in got] == [10.0, 20.0, 30.0] and [e.id for e in got] == [1, 2, 3]
    assert got[0] == entry(10.0)
    assert got[1].weights_after == {"base": 100, "tiny": 0} and got[1].actor == "operator:ana"
    assert [e.at for e in store.entries(since=20.0)] == [20.0, 30.0]
    assert [e.at for e in store.entries(limit=2)] == [20.0, 30.0]  # the newest, oldest first
    assert [e.at for e in store.entries(since=10.0, limit=1)] == [30.0]
    assert store.entries(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.entries(limit=-1)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit SET reason = 'nothing happened' WHERE id = 1",
        "UPDATE audit SET at = 0",
        "DELETE FROM audit WHERE id = 1",
        "DELETE FROM audit",  # without WHERE, SQLite would truncate if no trigger were there
    ],
)
def test_audit_log_refuses_update_and_delete(store: StateStore, db_path: Path, sql: str) -> None:
    store.append(**args(entry(10.0)))
    raw = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(sql)
        raw.rollback()
    finally:
        raw.close()
    assert store.entries() == [entry(10.0)]


def test_store_has_no_way_to_change_the_audit_log() -> None:
    public = {n for n in dir(StateStore) if not n.startswith("_")}
    assert public == {
        "load",
        "save",
        "all",
        "rolled_back",
        "append",
        "entries",
        "close",
        "seen_config",
        "exclusive",
        "see_config",
    }


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with StateStore(db_path):
        pass
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="schema"):
        StateStore(db_path)


def test_an_unreadable_state_is_a_store_error(store: StateStore, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    with raw:
        raw.execute("INSERT INTO candidates VALUES ('odd', 'r', '{\"variant\": \"odd\"}')")
    raw.close()
    with pytest.raises(StoreError, match="unreadable"):
        store.load("odd")


def test_schema_1_store_is_upgraded_in_place_and_keeps_its_audit(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,"
        " action TEXT NOT NULL, variant TEXT NOT NULL, revision TEXT NOT NULL, weights_before TEXT NOT NULL,"
        " weights_after TEXT NOT NULL, signals TEXT NOT NULL, reason TEXT NOT NULL);"
        "INSERT INTO audit (at, actor, action, variant, revision, weights_before, weights_after, signals,"
        " reason) VALUES (1.0, 'controller', 'track', 'canary', 'r1', '{}', '{}', '{}', 'x');"
        "PRAGMA user_version=1;"
    )
    db.close()
    with StateStore(path) as store:
        (old,) = store.entries()
        assert (old.action, old.config_revision) == ("track", "")
        assert store.seen_config() is None
        store.see_config("abc123", {"base": 100}, [entry(2.0, config_revision="abc123")])
        assert store.seen_config() == ("abc123", {"base": 100})
        assert [e.config_revision for e in store.entries()] == ["", "abc123"]


# -- the state is never lost silently --------------------------------------------------------------
def history(db_path: Path, n: int = 3) -> None:
    with StateStore(db_path) as s:
        for i in range(n):
            s.append(**args(entry(float(i))))


def test_every_entry_also_lands_in_the_hash_chained_copy_with_its_transaction(store, db_path):
    from serving.controller.audit_chain import chain_path, verify

    store.save(candidate(), [entry(1.0), entry(2.0)])
    with pytest.raises(sqlite3.IntegrityError):
        store.save(candidate(), [entry(3.0), entry(4.0, reason=None)])  # rolled back: not in the copy
    store.append(**args(entry(5.0)))
    copy = verify(chain_path(db_path))
    assert copy.intact and [r["at"] for r in copy.records] == [1.0, 2.0, 5.0]
    assert [r["id"] for r in copy.records] == [e.id for e in store.entries()]


def test_a_database_truncated_to_nothing_is_refused_not_replaced_by_an_empty_one(db_path, capsys):
    from serving.cli import main

    history(db_path)
    db_path.write_bytes(b"")
    with pytest.raises(StoreError, match="lost history"):
        StateStore(db_path)
    assert db_path.stat().st_size == 0  # left as it is
    assert main(["audit", "--state", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lost history" in err and "Traceback" not in err
    assert main(["audit", "--verify", "--state", str(db_path)]) == 1


def test_a_database_cut_short_is_refused_naming_the_file(db_path):
    history(db_path, 40)
    size = db_path.stat().st_size
    with db_path.open("r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(StoreError, match="not a readable controller state") as err:
        StateStore(db_path)
    assert str(db_path) in str(err.value) and "backup" in str(err.value)


def test_an_edited_or_cut_copy_is_found_at_its_line(db_path, capsys):
    from serving.cli import main
    from serving.controller.audit_chain import chain_path

    history(db_path, 3)
    assert main(["audit", "--verify", "--state", str(db_path)]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    copy = chain_path(db_path)
    lines = copy.read_text().splitlines(keepends=True)

    copy.write_text(lines[0] + lines[1].replace("controller", "someone else") + lines[2])
    with pytest.raises(StoreError, match=r"audit.jsonl:2: .*edited"):
        StateStore(db_path)
    assert main(["audit", "--verify", "--state", str(db_path)]) == 1
    assert "audit.jsonl:2" in capsys.readouterr().out

    copy.write_text(lines[0] + lines[2])
    with pytest.raises(StoreError, match=r"audit.jsonl:2: .*removed"):
        StateStore(db_path)

    copy.write_text(lines[0] + lines[1])  # the last line gone: the chain holds, the database disagrees
    with pytest.raises(StoreError, match="lost its last entries"):
        StateStore(db_path)

    copy.write_text("".join(lines))
    with StateStore(db_path) as s:
        assert len(s.entries()) == 3


def test_a_store_from_before_the_copy_starts_one_with_its_history(db_path):
    from serving.controller.audit_chain import chain_path, verify

    history(db_path, 2)
    chain_path(db_path).unlink()
    with StateStore(db_path) as s:
        s.append(**args(entry(9.0)))
    copy = verify(chain_path(db_path))
    assert copy.intact and [r["at"] for r in copy.records] == [0.0, 1.0, 9.0]


def test_stores_open_side_by_side_keep_one_chain(db_path):
    """The controller, `slimgate apply` and operator commands share one state: each append chains
    onto the copy's last line as it is then."""
    from serving.controller.audit_chain import chain_path, verify

    with StateStore(db_path) as a, StateStore(db_path) as b:
        a.append(**args(entry(1.0)))
        b.append(**args(entry(2.0)))
        a.save(candidate(), [entry(3.0)])
        b.see_config("abc", {"stable": 100}, [entry(4.0)])
    copy = verify(chain_path(db_path))
    assert copy.intact and [r["at"] for r in copy.records] == [1.0, 2.0, 3.0, 4.0]
    with StateStore(db_path) as again:
        assert len(again.entries()) == 4


def test_the_audit_listing_prints_the_newest_entries_one_line_each(db_path, capsys):
    """`slimgate audit` and the demo's closing listing (which calls print_audit directly)."""
    import json

    from serving.cli import main
    from serving.cli.controller import print_audit

    history(db_path, 5)
    assert print_audit(db_path, limit=3) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("controller" in line for line in lines)
    assert main(["audit", "--json", "--limit", "2", "--state", str(db_path)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert print_audit(db_path.with_name("absent.db")) == 1
    assert "no controller state" in capsys.readouterr().err
