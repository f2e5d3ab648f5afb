"""scripts/train.py with faults injected from outside the product (the reliability tests).

  python tests/fault_injection.py [--sleep_after_step=S] [--slow_commit_s=S]
      [--nonfinite_at_step=K] -- <scripts/train.py flags>

Patches a few seams of the real code, then runs scripts/train.py's own `__main__`
in this process, so flag parsing, the training loop, signals, checkpoints and exit
codes are the real ones and a test's SIGTERM or kill -9 reaches the trainer itself:

  --sleep_after_step=S   sleep S s after each training step is dispatched, so a
                         test's kill lands mid-run.
  --slow_commit_s=S      hold each checkpoint in its <step>.orbax-checkpoint-tmp-*
                         dir S s before the rename that commits it, so a test can
                         kill -9 mid-write.
  --nonfinite_at_step=K  make the inputs, hence the loss and gradients, of the
                         update from step K to K+1 non-finite (the step that
                         `train.nonfinite_policy` then reports as step K).

Why these seams (the least likely to move under the product):
  * Trainer.__init__ is wrapped, not the loop: after it runs, `trainer.train_step`
    (the jitted step the loop calls) is wrapped with the sleep, and the data source
    it is built on is wrapped with the poison.
  * The poison enters through the DataSource interface (`train_extras` +
    `train_batches` + `train_inputs`), the same seam ImageNet's on-device colour
    seeds use: a per-example float that is 0 except at step K, where it is inf and
    is added to that step's network input inside the real jitted step. The step, its
    non-finite guard and the checkpoints are untouched, and no step counter has to
    be read back from the device.
  * The slow commit patches orbax's own `AtomicRenameTemporaryPath.finalize` (the
    rename that commits a checkpoint on a local disk) rather than the product's
    Checkpointer, so it holds whatever way the Checkpointer builds its manager.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import runpy
import sys
import time
from typing import Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO, "scripts", "train.py")
sys.path.insert(0, REPO)

POISON = "fault_injection_poison"


class PoisonedSource:
  """`source`, with the network input of step `step` made inf (see the module doc)."""

  def __init__(self, source, step: int):
    self._source, self._step = source, step
    self.train_extras = {**source.train_extras, POISON: ((), np.float32)}

  def __getattr__(self, name):  # everything else is the real source's
    return getattr(self._source, name)

  def train_batches(self, start_step, *args, **kwargs):
    for step, batch in enumerate(self._source.train_batches(start_step, *args, **kwargs),
                                 start=start_step):
      value = np.inf if step == self._step else 0.0
      yield {**batch, POISON: np.full(len(batch["label"]), value, np.float32)}

  def train_inputs(self, batch):
    batch = dict(batch)
    poison = batch.pop(POISON, None)
    x = self._source.train_inputs(batch)
    if poison is None:
      return x
    return x + poison.reshape(poison.shape + (1,) * (x.ndim - 1))


def _sleeping(step_fn, seconds: float):
  @functools.wraps(step_fn)
  def step(*args, **kwargs):
    out = step_fn(*args, **kwargs)
    time.sleep(seconds)
    return out
  return step


def install(sleep_after_step: float = 0.0, slow_commit_s: float = 0.0,
            nonfinite_at_step: Optional[int] = None) -> None:
  """Patch the seams named in the module doc (process-wide, for a launcher process)."""
  from bn_inception import train
  from bn_inception.data import create_source

  if sleep_after_step or nonfinite_at_step is not None:
    real_init = train.Trainer.__init__

    @functools.wraps(real_init)
    def init(self, config, *args, source=None, **kwargs):
      if nonfinite_at_step is not None:
        source = PoisonedSource(source or create_source(config.data), nonfinite_at_step)
      real_init(self, config, *args, source=source, **kwargs)
      if sleep_after_step:
        self.train_step = _sleeping(self.train_step, sleep_after_step)

    train.Trainer.__init__ = init

  if slow_commit_s:
    from orbax.checkpoint.path import atomicity
    cls = atomicity.AtomicRenameTemporaryPath
    real_finalize = cls.finalize

    @functools.wraps(real_finalize)
    async def finalize(self, *args, **kwargs):
      await asyncio.sleep(slow_commit_s)
      return await real_finalize(self, *args, **kwargs)

    cls.finalize = finalize


def main(argv):
  if "--" not in argv:
    sys.exit("usage: fault_injection.py [fault flags] -- <scripts/train.py flags>")
  split = argv.index("--")
  parser = argparse.ArgumentParser(prog="fault_injection.py")
  parser.add_argument("--sleep_after_step", type=float, default=0.0)
  parser.add_argument("--slow_commit_s", type=float, default=0.0)
  parser.add_argument("--nonfinite_at_step", type=int, default=None)
  faults = parser.parse_args(argv[:split])
  install(**vars(faults))
  sys.argv = [TRAIN_SCRIPT] + argv[split + 1:]
  runpy.run_path(TRAIN_SCRIPT, run_name="__main__")


if __name__ == "__main__":
  main(sys.argv[1:])
