"""Checkpoints (orbax CheckpointManager) and the workdir's config contract.

A checkpoint holds the whole TrainState (step, params, BN statistics, optimizer
state) and a small JSON record of the data position. The training order is a
function of (seed, step), so the step is all the data order needs to resume.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from flax import traverse_util

CONFIG_FILE = "config.json"

# Fields a resumed run may change without becoming a different run.
RESUMABLE_FIELDS = (
    "train.num_steps", "train.eval_every", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.eval_batch_size", "train.eval_at_start",
    "data.data_dir", "data.download_if_missing", "distributed",
)


class CheckpointError(Exception):
  """No usable checkpoint, or one that does not fit this model."""


class WorkdirConfigError(Exception):
  """The workdir holds a run with a different configuration."""


def _flat(config_dict) -> dict:
  return {".".join(k): v for k, v in traverse_util.flatten_dict(config_dict).items()}


def check_or_save_config(workdir: str, config) -> None:
  """Save config.json into a new workdir; refuse a workdir holding another run."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    a, b = _flat(saved), _flat(current)
    diffs = [f"  {k}: {a.get(k, '<absent>')!r} in the workdir, {b.get(k, '<absent>')!r} now"
             for k in sorted(set(a) | set(b))
             if k not in RESUMABLE_FIELDS and a.get(k) != b.get(k)]
    if diffs:
      raise WorkdirConfigError(
          f"{workdir} holds a run with a different configuration:\n" + "\n".join(diffs) +
          "\nUse a new --workdir, or rerun with the saved settings to resume. "
          "Nothing was changed.")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(current, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


class Checkpointer:
  """orbax CheckpointManager with an explicit interval and retention, and fallback restore."""

  def __init__(self, workdir: str, every_steps: int, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, max_to_keep=keep, create=True))

  def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
    return self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=force)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def restore(self, abstract_state) -> Optional[Tuple[Any, dict]]:
    """Newest usable checkpoint; older ones are tried, with a warning, if it is damaged."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    failures = []
    for step in steps:
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax raises many types for damaged files.
        failures.append((step, e))
        logging.warning("Checkpoint at step %d in %s could not be restored (%s: %s).",
                        step, self.directory, type(e).__name__, str(e)[:300])
        continue
      if failures:
        msg = (f"WARNING: newest checkpoint(s) at step(s) {[s for s, _ in failures]} are "
               f"unusable; resuming from step {step} instead.")
        logging.warning(msg)
        print(msg, flush=True)
      return restored["state"], restored["meta"]
    raise CheckpointError(
        f"No usable checkpoint in {self.directory}: steps {steps} all failed to restore "
        f"(newest: {type(failures[0][1]).__name__}: {str(failures[0][1])[:300]}). "
        "Nothing was deleted.")

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
