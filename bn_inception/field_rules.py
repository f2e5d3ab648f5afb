"""What a config field allows: the rules bn_inception/schema/ writes beside each default.

A `Rule` says in words what it allows and tests a value (with the whole config at
hand, for the few rules that depend on another field). `config_checks.validate`
applies every field's rule before anything runs and reports each violation as one
line: `config.<field>=<value> <what is allowed> (<meaning>).`

Imports only the standard library: loading a config costs no TensorFlow or JAX.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Rule:
  """`ok(value, config)`: whether the field may hold `value`; `allowed` (or
  `allowed(config)`) completes the sentence "config.<field>=<value> ..." when it may not."""
  allowed: Any  # str | Callable[[config], str]
  ok: Callable[[Any, Any], bool]
  meaning: str = ""

  def problem(self, path: str, value, config) -> Optional[str]:
    if self.ok(value, config):
      return None
    shown = tuple(value) if isinstance(value, (list, tuple)) else value
    meaning = f" ({self.meaning})" if self.meaning else ""
    allowed = self.allowed(config) if callable(self.allowed) else self.allowed
    return f"config.{path}={shown!r}{allowed}{meaning}."

  def means(self, meaning: str) -> "Rule":
    return dataclasses.replace(self, meaning=meaning)


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def at_least(lowest, meaning: str = "") -> Rule:
  """A number >= `lowest`; an integer when `lowest` is one."""
  whole = is_integer(lowest)
  return Rule(f" must be >= {lowest}",
              lambda v, c: (is_integer(v) if whole else _number(v)) and v >= lowest, meaning)


def above(lowest, meaning: str = "") -> Rule:
  return Rule(f" must be > {lowest}", lambda v, c: _number(v) and v > lowest, meaning)


def within(low, high, *, low_open: bool = False, high_open: bool = False,
           meaning: str = "") -> Rule:
  """A number in the interval between `low` and `high`; open ends excluded."""
  text = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

  def ok(v, c):
    return (_number(v) and (v > low if low_open else v >= low)
            and (v < high if high_open else v <= high))
  return Rule(f" must be in {text}", ok, meaning)


def one_of(*values, meaning: str = "") -> Rule:
  return Rule(f"; known: {', '.join(str(v) for v in values)}",
              lambda v, c: v in values and type(v) in {type(x) for x in values}, meaning)


FLAG = Rule(" must be True or False", lambda v, c: isinstance(v, bool))
TEXT = Rule(" must be a string", lambda v, c: isinstance(v, str))
FINITE = Rule(" must be a finite number", lambda v, c: _number(v) and math.isfinite(v))


def each(rule: Rule, length: Optional[int] = None, min_length: int = 0,
         meaning: str = "") -> Rule:
  """A tuple (of `length` values, or at least `min_length`) whose values obey `rule`."""
  count = (f"{length} values" if length is not None else
           f"at least {min_length} value{'s' if min_length != 1 else ''}" if min_length
           else "values")

  def ok(v, c):
    return (isinstance(v, (tuple, list)) and len(v) >= min_length
            and (length is None or len(v) == length) and all(rule.ok(x, c) for x in v))
  return Rule(f" must be {count}, each{rule.allowed.replace(' must be', '')}", ok, meaning)


def ordered_pair(low, high=None, meaning: str = "") -> Rule:
  """(lo, hi) with low < lo <= hi (<= high when given)."""
  bound = "" if high is None else f" <= {high}"

  def ok(v, c):
    return (isinstance(v, (tuple, list)) and len(v) == 2 and all(_number(x) for x in v)
            and low < v[0] <= v[1] and (high is None or v[1] <= high))
  return Rule(f" must be (lo, hi) with {low} < lo <= hi{bound}", ok, meaning)


@dataclasses.dataclass(frozen=True)
class _When(Rule):
  applies: Callable[[Any], bool] = bool
  then: Optional[Rule] = None
  otherwise: Optional[Rule] = None

  def _rule(self, config) -> Rule:
    return self.then if self.applies(config) else self.otherwise

  def problem(self, path, value, config):
    return self._rule(config).problem(path, value, config)


def when(applies: Callable[[Any], bool], then: Rule, otherwise: Rule) -> Rule:
  """`then` where `applies(config)`, else `otherwise`."""
  return _When(then.allowed, lambda v, c: (then if applies(c) else otherwise).ok(v, c),
               then.meaning, applies, then, otherwise)


def custom(allowed, ok: Callable[[Any, Any], bool], meaning: str = "") -> Rule:
  """`allowed`: words, or config -> words."""
  if callable(allowed):
    return Rule(lambda c: f" {allowed(c)}", ok, meaning)
  return Rule(f" {allowed}", ok, meaning)
