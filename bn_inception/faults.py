"""Test-only timing hooks for the reliability tests (tests/test_reliability.py).

They change only *when* things happen, never what is computed, so they are
environment variables rather than config fields (a config field would enter the
workdir's config.json). Unset in real runs. The NaN injector, which does change
the run, is the config field `train.inject_nonfinite_at_step`.

  BN_INCEPTION_TEST_STEP_SLEEP_S=0.02   sleep after every training step, so a
                                        test's kill lands mid-run
  BN_INCEPTION_TEST_SLOW_COMMIT_S=5     hold every checkpoint in its
                                        <step>.orbax-checkpoint-tmp-* dir this
                                        long before the rename that commits it,
                                        so a test can kill -9 mid-write
"""

from __future__ import annotations

import asyncio
import os
import time

STEP_SLEEP_ENV = "BN_INCEPTION_TEST_STEP_SLEEP_S"
SLOW_COMMIT_ENV = "BN_INCEPTION_TEST_SLOW_COMMIT_S"


def _seconds(name: str) -> float:
  value = os.environ.get(name, "")
  try:
    return max(0.0, float(value)) if value else 0.0
  except ValueError:
    raise ValueError(f"${name}={value!r} must be a number of seconds.") from None


def step_hook():
  """None normally (nothing on the training loop's hot path); with
  $BN_INCEPTION_TEST_STEP_SLEEP_S a function that sleeps after each step."""
  delay = _seconds(STEP_SLEEP_ENV)
  return (lambda: time.sleep(delay)) if delay else None


def slow_commit_path_class():
  """None normally; with $BN_INCEPTION_TEST_SLOW_COMMIT_S an orbax TemporaryPath
  that waits before committing (renaming) each finished checkpoint."""
  delay = _seconds(SLOW_COMMIT_ENV)
  if not delay:
    return None
  from orbax.checkpoint.path import atomicity

  class SlowCommitTemporaryPath(atomicity.AtomicRenameTemporaryPath):

    async def finalize(self, *args, **kwargs):
      await asyncio.sleep(delay)
      return await super().finalize(*args, **kwargs)

  return SlowCommitTemporaryPath
