"""The vocabulary of sweep files: named runs of the one training loop, each a base config
plus field overrides.

A sweep file (configs/sweeps/*.py) defines `get_sweep()` (or `get_sweep(arg)` for
`file.py:arg`) returning a list of `Member`s, e.g.

  from bn_inception.sweep import Member, members, product

  def get_sweep():
    return [Member("baseline", "configs/bn_x5.py:cpu"),
            *members("bn_x5", "configs/bn_x5.py:cpu",
                     product("optim.learning_rate", [0.1, 0.5, 1.0])
                     * product("bn.group_size", [8, 32]),
                     overrides={"bn.stats_mode": "group"})]

gives baseline, bn_x5-lr0.1-bn_group8, bn_x5-lr0.1-bn_group32, ... (six grid members).

This module only describes members; bn_inception/sweep_runner.py loads a sweep file,
checks every member's overrides (bn_inception/overrides.py: exactly as
`scripts/train.py --config=<file> --config.<field>=<value>` would take them) and runs
them. It imports nothing heavy, so sweep files load fast.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import ml_collections

from bn_inception.overrides import format_label_value

# Short labels for automatic member names; other fields use their last component.
SHORT_LABELS = {"optim.learning_rate": "lr", "bn.group_size": "bn_group",
                "train.batch_size": "batch", "optim.weight_decay": "wd",
                "optim.momentum": "mom", "seed": "seed", "bn.enabled": "bn",
                "model.activation": "", "model.dropout_rate": "dropout"}


class SweepError(ValueError):
  """A sweep file, member or override that cannot run; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Member:
  """One run: `config` is 'configs/<file>.py[:arg]' (repo-relative) or a ConfigDict."""
  name: str
  config: Union[str, ml_collections.ConfigDict]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Axis:
  """Labelled override sets; `a * b` is their Cartesian product (labels joined by '-')."""
  points: Tuple[Tuple[str, Mapping[str, Any]], ...]

  def __mul__(self, other: "Axis") -> "Axis":
    points = []
    for (la, oa), (lb, ob) in itertools.product(self.points, other.points):
      both = sorted(set(oa) & set(ob))
      if both:
        raise SweepError(f"product of two axes that both set {', '.join(both)}.")
      points.append(("-".join(l for l in (la, lb) if l), {**oa, **ob}))
    return Axis(tuple(points))

  def __iter__(self):
    return iter(self.points)

  def __len__(self):
    return len(self.points)


def product(field: str, values: Sequence[Any], label: Optional[str] = None) -> Axis:
  """One field over `values`; each point is labelled `<label><value>` (label: a short
  name such as 'lr' for optim.learning_rate, else the field's last component)."""
  if isinstance(values, (str, bytes)) or not len(values):
    raise SweepError(f"product({field!r}, ...) needs a non-empty list of values.")
  if label is None:
    label = SHORT_LABELS.get(field, field.split(".")[-1])
  return Axis(tuple((f"{label}{format_label_value(v)}", {field: v}) for v in values))


def variants(named: Mapping[str, Mapping[str, Any]]) -> Axis:
  """Named override sets that change several fields together, e.g.
  variants({"fast": {"optim.learning_rate": 1.0, "optim.decay_steps": 100}, "slow": {...}})."""
  return Axis(tuple((label, dict(overrides)) for label, overrides in named.items()))


def members(prefix: str, config, axis: Optional[Axis] = None,
            overrides: Optional[Mapping[str, Any]] = None) -> List[Member]:
  """One member per point of `axis` (or a single one), named `<prefix>-<point label>`."""
  fixed = dict(overrides or {})
  if axis is None:
    return [Member(prefix, config, fixed)]
  out = []
  for label, point in axis:
    clash = sorted(set(point) & set(fixed))
    if clash:
      raise SweepError(f"members({prefix!r}): the axis and the fixed overrides both set "
                       f"{', '.join(clash)}.")
    name = "-".join(p for p in (prefix, label) if p)
    out.append(Member(name, config, {**fixed, **point}))
  return out
