"""The settings that differ between two runs: the Runs panel's "Changes" column.

A run's settings are the snapshot in its folder (the configs it was started with), never a form's
current values; this module only compares two such snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# Set by the data or the machine, not chosen: a change of text shows as vocab_size otherwise.
IGNORED = frozenset({"vocab_size", "device"})


@dataclass(frozen=True)
class Change:
    name: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.name} {_shown(self.before)} → {_shown(self.after)}"


def _shown(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def flatten(model: Mapping[str, Any], train: Mapping[str, Any]) -> dict[str, Any]:
    """One name -> value map of a run's two configs (their field names never clash)."""
    return {**dict(model), **dict(train)}


def changes(before: Mapping[str, Any], after: Mapping[str, Any], *, ignore: Sequence[str] = IGNORED) -> list[Change]:
    """What `after` changed relative to `before`, in `after`'s order. A setting only one of them has
    (a field added in a newer version) counts as off (None) in the other."""
    names = list(after) + [n for n in before if n not in after]
    out = []
    for name in names:
        if name in ignore:
            continue
        if before.get(name) != after.get(name):
            out.append(Change(name, before.get(name), after.get(name)))
    return out


def describe(found: Sequence[Change], *, limit: int = 4) -> str:
    """The changes as one short cell: "learning_rate 0.001 → 0.003, n_layer 4 → 6 (+2 more)"."""
    if not found:
        return "same settings"
    text = ", ".join(str(c) for c in found[:limit])
    return text + (f" (+{len(found) - limit} more)" if len(found) > limit else "")

