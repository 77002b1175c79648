"""Cascade variants across the config: naming the entry a cascade serves, and checking its stages.

A cascade (``variants.<key>.cascade``) names two other variants of the same config, so its
checks need the whole ``variants`` table: :func:`fill_cascade_refs` gives a cascade without a
``ref`` the registry entry named after its stages (``cascade-<first>-to-<then>``), and
:func:`cascade_stage_problems` says what is wrong with its stages, field by field.
"""

from __future__ import annotations

from typing import Any

from serving.config.base import rule


def fill_cascade_refs(data: Any) -> Any:
    """The raw config with each ref-less cascade's ref filled in; its stage problems raised first."""
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, dict):
        return data
    cascades = {k for k, v in variants.items() if isinstance(v, dict) and isinstance(v.get("cascade"), dict)}
    filled, problems = {}, []
    for key, spec in variants.items():
        if key in cascades and "ref" not in spec:
            c = spec["cascade"]
            found = cascade_stage_problems(key, c.get("first"), c.get("then"), set(variants), cascades)
            problems.extend(found)
            names_given = [c.get(s) for s in ("first", "then")]
            stages = [variants.get(n) if isinstance(n, str) else None for n in names_given]
            refs = [st.get("ref") if isinstance(st, dict) else None for st in stages]
            if not found and all(isinstance(r, str) for r in refs):
                names = [str(r).partition("@")[0] for r in refs]
                spec = {**spec, "ref": f"cascade-{names[0]}-to-{names[1]}"}
        filled[key] = spec
    if problems:
        raise rule(*problems)
    return {**data, "variants": filled}


def cascade_stage_problems(
    key: str, first: Any, then: Any, configured: set[str], cascades: set[str]
) -> list[tuple[str, str]]:
    """What is wrong with the stages of cascade ``key`` (field paths from the config's top)."""
    known = ", ".join(sorted(configured))
    problems = []
    for stage, target in (("first", first), ("then", then)):
        where = f"variants.{key}.cascade.{stage}"
        if not isinstance(target, str):
            continue  # a missing or mistyped field: the field's own validation names it
        if target == key:
            problems.append((where, f"a cascade cannot be a stage of itself ({key!r})"))
        elif target not in configured:
            problems.append((where, f"{target!r} is not a configured variant (configured: {known})"))
        elif target in cascades:
            problems.append((where, f"{target!r} is a cascade itself; a stage must be a single variant"))
    if isinstance(first, str) and first == then and first != key:
        problems.append((f"variants.{key}.cascade.then", f"the same variant as first ({first!r})"))
    return problems
