"""`<workdir>/config.json`: the configuration a run was started with, and whether a
launch may go on with it.

A resumed run must be the same run: `check_or_save_config` refuses a configuration
that differs from the saved one in any field that changes what the run computes
(`RESUMABLE_FIELDS` may change), before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Optional, Tuple

import ml_collections

from bn_inception import config_upgrade, schema
from bn_inception.workdir import (CONFIG_FILE, CheckpointError, WorkdirConfigError,
                                  config_path, finished_steps, is_workdir)

# Fields a resumed run may change without becoming a different run: those that do
# not change what it computes, and how long it runs and how often it is evaluated.
RESUMABLE_FIELDS = schema.NON_RESULT_FIELDS + (
    "train.num_steps", "train.eval_every", "train.eval_at_start",
    # Only what happens at a non-finite step, not the run itself: switching to 'skip'
    # after a 'stop' is how such a run goes on.
    "train.nonfinite_policy",
)


def flat(tree) -> dict:
  """{'section.field': value} of a nested config (ConfigDict, dict, or its JSON form)."""
  if hasattr(tree, "to_dict"):
    tree = tree.to_dict()
  out = {}
  for key, value in dict(tree).items():
    if isinstance(value, dict):  # (an empty section has no fields)
      out.update({f"{key}.{k}": v for k, v in flat(value).items()})
    else:
      out[key] = value
  return out


def _as_json(config) -> dict:
  """A config as config.json stores it (tuples become lists, as on a reload)."""
  return json.loads(config.to_json_best_effort())


def _path(workdir: str):
  from etils import epath
  return epath.Path(config_path(workdir))


def _saved_json(workdir: str) -> dict:
  """config.json as written (JSON values), or a WorkdirConfigError naming the file."""
  if not is_workdir(workdir):
    raise CheckpointError(f"{workdir} has no {CONFIG_FILE}: not a training workdir "
                          f"(scripts/train.py writes it there).")
  path = _path(workdir)
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirConfigError(
        f"{path} is unreadable ({e}); it records which configuration this workdir's run "
        "used. Restore it, or use a new --workdir. Nothing was changed.") from e


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The configuration a workdir's run was started with (its config.json), with the
  fields added since then filled as that run used them (`config_upgrade.upgrade`)."""
  return config_upgrade.upgrade(_saved_json(workdir))  # an older version's config: today's fields


@dataclasses.dataclass(frozen=True)
class ConfigDifference:
  """How a configuration differs from the one a workdir's run was started with."""
  changed: Tuple[str, ...]   # 'field: saved in the workdir, current now' (refuse the run)
  added: Tuple[str, ...]     # fields the code gained since the run started (a warning each)
  removed: Tuple[str, ...]   # fields the code dropped since (a warning each)


def config_difference(workdir: str, config) -> Optional[ConfigDifference]:
  """None for a workdir without config.json; else how `config` differs from it.

  Fields in RESUMABLE_FIELDS may change between launches of one run. A field added
  to (or dropped from) the code since the run started does not make it another run:
  refusing it would strand every workdir at each code change. An added field whose
  value now differs from how the run so far behaved (`config_upgrade.upgrade`) is named.
  """
  if not is_workdir(workdir):
    return None
  saved = flat(_saved_json(workdir))
  behaved = flat(_as_json(read_config(workdir)))
  now = flat(_as_json(config))
  keys = [k for k in sorted(set(saved) | set(now)) if k not in RESUMABLE_FIELDS]
  return ConfigDifference(
      changed=tuple(f"{k}: {saved[k]!r} in the workdir, {now[k]!r} now"
                    for k in keys if k in saved and k in now and saved[k] != now[k]),
      added=tuple(f"{k} is new since this run started; using {now[k]!r}" +
                  (f" (the run so far behaved as {behaved[k]!r})"
                   if k in behaved and behaved[k] != now[k] else "")
                  for k in keys if k in now and k not in saved),
      # A field that config_upgrade moved (its value lives on in a new field) is not lost.
      removed=tuple(f"{k} (={saved[k]!r} in the workdir) " +
                    ("no longer exists; ignoring it" if k in behaved else
                     "has moved; its value is carried into the new field(s)")
                    for k in keys if k in saved and k not in now))


def check_or_save_config(workdir: str, config, save: bool = True) -> None:
  """Save config.json into a new workdir; refuse a workdir holding another run.

  With save=False only check, so a launch that fails validation (bad batch,
  missing data) leaves no config.json that would refuse the corrected command.
  Only process 0 saves (and warns).
  """
  if save:
    import jax  # loaded already by the run that saves
    save = jax.process_index() == 0
  diff = config_difference(workdir, config)
  if diff is not None and diff.changed and not finished_steps(workdir):
    # A launch that failed before its first checkpoint (bad data, a typo) left a
    # config.json but no run: its retry may change any field.
    if save:
      logging.warning(f"{config_path(workdir)} is from a launch that saved no checkpoint; "
                      f"replacing it ({len(diff.changed)} field(s) differ: "
                      f"{'; '.join(diff.changed[:3])}).")
    diff = None
  if diff is not None and diff.changed:
    raise WorkdirConfigError(
        f"{workdir} holds a run with a different configuration:\n" +
        "\n".join(f"  {line}" for line in diff.changed) +
        "\nUse a new --workdir, or rerun with the saved settings to resume. "
        "Nothing was changed.")
  if not save:
    return
  for line in (diff.added + diff.removed if diff is not None else ()):
    logging.warning(f"config field {line}.")
  path = _path(workdir)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(json.dumps(_as_json(config), indent=2, sort_keys=True))
  tmp.replace(path)
