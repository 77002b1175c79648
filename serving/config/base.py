"""What every part of the gateway config schema shares: strict field types, the error type and its
formatting, and the change-cost tag every field carries.

**Change cost.** Each field of each model says what applying a change to it costs, the way Ray
Serve's ``DeploymentConfig`` tags each option with an ``update_type``: the :func:`changes` class
decorator names the cost of every field of a model. The cost of a changed dotted path is the
highest tag along it (``http.port`` is ``listener`` because ``http`` is).
:func:`serving.config.changes.diff`, the Ray Serve translation (:mod:`serving.translation`) and
the generated Helm pieces (:mod:`serving.tools.chart`) read these tags; a model whose fields are
not all tagged is a TypeError when it is defined, so a new field is never silently lightweight.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

RULE = "slimgate_config"
CHANGE_KEY = "x-slimgate-change"


class ConfigError(ValueError):
    """A gateway config that cannot be used; the message names each bad field by its dotted path."""


class Change(IntEnum):
    """What applying a changed field costs, cheapest first."""

    #: Applied by the running router (and, through Ray Serve's ``user_config``, by replicas'
    #: ``reconfigure``); nothing restarts.
    LIVE = 0
    #: Ray Serve changes the replica count in place.
    RESCALE = 1
    #: What a replica loads: a variant with its own deployment restarts its replicas, one placed in
    #: the router is loaded and swapped in live by each router replica.
    ARTIFACT = 2
    #: How a replica runs (its reservation, where it is placed): its replicas are replaced.
    RESTART = 3
    #: Where the gateway listens: a running gateway refuses it (restart the gateway instead).
    LISTENER = 4


LIVE, RESCALE, ARTIFACT, RESTART, LISTENER = (
    Change.LIVE,
    Change.RESCALE,
    Change.ARTIFACT,
    Change.RESTART,
    Change.LISTENER,
)


M = TypeVar("M", bound=BaseModel)


def changes(**tags: Change) -> Callable[[type[M]], type[M]]:
    """Class decorator: the change cost of every field of a config model, one keyword per field.

    A field left out, or a name that is not a field, is a TypeError when the model is defined, so
    a new field cannot be added without saying what changing it costs. Each tag is also written
    into the field's JSON schema (``x-slimgate-change``), where the Helm chart's schema shows it.
    """

    def apply(model: type[M]) -> type[M]:
        fields = set(model.model_fields)
        missing, unknown = sorted(fields - tags.keys()), sorted(tags.keys() - fields)
        if missing or unknown:
            raise TypeError(
                f"{model.__name__}: change costs must name every field exactly "
                f"(untagged: {missing or 'none'}; not fields: {unknown or 'none'})"
            )
        for name, change in tags.items():
            info = model.model_fields[name]
            extra = dict(info.json_schema_extra) if isinstance(info.json_schema_extra, dict) else {}
            info.json_schema_extra = {**extra, CHANGE_KEY: change.name.lower()}
        model.__change_costs__ = dict(tags)  # type: ignore[attr-defined]
        model.model_rebuild(force=True)
        return model

    return apply


def field_change(model: type[BaseModel], name: str) -> Change:
    """The change cost tagged on ``model.name`` (see :func:`changes`)."""
    return model.__change_costs__[name]  # type: ignore[attr-defined]


def fields_costing(model: type[BaseModel], change: Change) -> tuple[str, ...]:
    """The fields of ``model`` tagged ``change``, in declaration order."""
    return tuple(n for n in model.model_fields if field_change(model, n) is change)


def submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The section model a field holds (directly, optionally, or as the values of a dict) and
    whether it is a dict of them (whose next path segment is a key, not a field)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = getattr(annotation, "__origin__", None)
    args: tuple[Any, ...] = tuple(getattr(annotation, "__args__", ()) or ())
    if origin is dict and len(args) == 2:
        inner, _ = submodel(args[1])
        return inner, True
    for a in args:  # Optional[X], Annotated[X, ...]
        inner, is_map = submodel(a)
        if inner is not None:
            return inner, is_map
    return None, False


def path_change(model: type[BaseModel], path: str) -> Change:
    """The cost of changing dotted ``path`` of ``model``: the highest tag along it.

    Segments past the last model field (a key of ``routing.weights``, an index) belong to it.
    """
    highest = Change.LIVE
    current: type[BaseModel] | None = model
    parts = path.split(".")
    i = 0
    while current is not None and i < len(parts):
        name = parts[i]
        if name not in current.model_fields:
            break
        highest = max(highest, field_change(current, name))
        inner, is_map = submodel(current.model_fields[name].annotation)
        current = inner
        i += 2 if is_map else 1
    return highest


def rule(*problems: tuple[str, str]) -> PydanticCustomError:
    """A validation error about fields of the model being validated (paths relative to it).

    Raising this instead of ValueError keeps the field path structured, so that
    :func:`format_errors` prints ``routing.weights: ...`` instead of ``routing: Value error, ...``.
    """
    reason = "; ".join(f"{path}: {msg}" for path, msg in problems)
    return PydanticCustomError(RULE, "{reason}", {"reason": reason, "problems": problems})


def _join(loc: tuple[Any, ...], rel: str = "") -> str:
    parts = [str(p) for p in loc] + ([rel] if rel else [])
    return ".".join(parts) or "(top level)"


def format_errors(err: ValidationError, source: str) -> str:
    """Every problem of ``err`` on a line of its own, named by its dotted field path."""
    lines = [f"invalid gateway config {source}:"]
    for e in err.errors():
        if e["type"] == RULE:
            lines.extend(f"  {_join(e['loc'], path)}: {msg}" for path, msg in e["ctx"]["problems"])
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {_join(e['loc'])}: unknown field")
        elif e["type"] == "value_error":
            lines.append(f"  {_join(e['loc'])}: {e['ctx']['error']}")
        else:
            lines.append(f"  {_join(e['loc'])}: {e['msg']}")
    return "\n".join(lines)


class Section(BaseModel):
    """A config section: unknown keys rejected, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


StrictPositiveInt = Annotated[int, Field(strict=True, gt=0)]
StrictNonNegInt = Annotated[int, Field(strict=True, ge=0)]
StrictFloat = Annotated[float, Field(strict=True)]
# Deployment names double as pin-header values and metric labels, so they stay plain.
VariantKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", to_lower=True)]
