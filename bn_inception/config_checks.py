"""`validate(config)`: the numeric training fields checked before anything runs.

Called once at the start of `train.train_and_evaluate` and for every sweep member
by the sweep runner, so a value that would fail (or silently lose a run) minutes
into training is one `error:` line before any data is read or anything written.
The fields are defined, with their meaning, in bn_inception/schema.py.
"""

from __future__ import annotations

from typing import List


class ConfigError(ValueError):
  """A config field holds a value the training loop cannot run with."""


# (field, lowest allowed value, what the field means / how to turn it off)
_INTERVALS = (
    ("num_steps", 1, "the number of training steps"),
    ("batch_size", 1, "the GLOBAL training batch"),
    ("eval_batch_size", 1, "the GLOBAL evaluation batch"),
    ("log_every", 1, "steps between train/* rows"),
    ("checkpoint_every", 1, "steps between checkpoints (a checkpoint is also written at "
     "num_steps and on SIGTERM)"),
    ("keep_checkpoints", 1, "how many newest checkpoints are kept; 0 would keep none (the "
     "run could not resume), so it is refused: give a large number to keep more"),
    ("eval_every", 0, "steps between full evaluations of the eval split (and one at num_steps); 0: never"),
)
NONFINITE_POLICIES = ("stop", "skip")


def problems(config) -> List[str]:
  """One line per invalid field of `config.train` (empty: valid)."""
  tc = config.train
  out = []
  for field, lowest, meaning in _INTERVALS:
    value = tc[field]
    if isinstance(value, bool) or not isinstance(value, int):
      out.append(f"config.train.{field}={value!r} must be an integer ({meaning}).")
    elif value < lowest:
      out.append(f"config.train.{field}={value} must be >= {lowest} ({meaning}).")
  if tc.nonfinite_policy not in NONFINITE_POLICIES:
    out.append(f"config.train.nonfinite_policy={tc.nonfinite_policy!r}; use "
               f"{' or '.join(repr(p) for p in NONFINITE_POLICIES)}.")
  return out


def validate(config) -> None:
  """Raise ConfigError naming every invalid training field (one line each)."""
  found = problems(config)
  if found:
    raise ConfigError(" ".join(found) + " Nothing was run.")
