"""Where a training step's time goes: the share spent waiting for input, and a
jax.profiler trace of chosen steps (train.profile_steps).

`InputClock` wraps the loop's batch iterator. JAX dispatches a train step
asynchronously: the call returns at once and the device computes while the host
fetches the next batch. So the host time inside `next(batches)` (the data source's
decoding and augmentation, and `sharding.device_batches`' device transfer) is the
time the loop is blocked on input; whenever it exceeds what the device needs for a
step, the device idles for the difference. `input_wait` is that time as a share of
the wall time of the log interval's steps (evaluations and checkpoints, timed with
`paused()`, are left out); `input_wait_secs` the same time per step. Both are
timings, like clu's `steps_per_sec`: not train/* metrics, and not bit-equal
across a resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Dict, Iterator, Optional

from bn_inception import workdir as workdir_lib
from bn_inception.schema.training import profile_window

# A log interval waiting on input for more than this share of its step time makes a
# run input-bound: the device idles at least that share. The first interval is not
# judged (it holds the compilation and the pipeline's warm-up), nor one whose wait is
# under INPUT_BOUND_SECS per step: a tiny model on in-memory data (MNIST's MLP, ~1 ms
# a step) may wait 20% of a step for its batch, but nothing there is worth preparing.
INPUT_BOUND_SHARE = 0.2
INPUT_BOUND_SECS = 1e-3


class InputClock:
  """The batches of a training run, timed: `next()` per step, `interval()` per log step."""

  def __init__(self, batches: Iterator):
    self._batches = batches
    self._start = time.perf_counter()
    self._wait = self._paused = 0.0
    self._steps = self._intervals = 0
    self._warned = False

  def next(self):
    """The next batch; the time spent getting it is input wait."""
    t = time.perf_counter()
    batch = next(self._batches)
    self._wait += time.perf_counter() - t
    self._steps += 1
    return batch

  @contextlib.contextmanager
  def paused(self):
    """Work between steps (evaluation, checkpointing) not counted as step time."""
    t = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - t

  def interval(self) -> Dict[str, float]:
    """{'input_wait': share of step time, 'input_wait_secs': per step} since the last
    call; call it after the interval's metrics were fetched (the device caught up).
    Warns once when a later interval is input-bound."""
    now = time.perf_counter()
    step_time = max(now - self._start - self._paused, self._wait, 1e-9)
    share = self._wait / step_time
    per_step = self._wait / max(self._steps, 1)
    self._intervals += 1
    if (share > INPUT_BOUND_SHARE and per_step > INPUT_BOUND_SECS and self._intervals > 1
        and not self._warned):
      self._warned = True
      logging.warning(
          "Input-bound: %.0f%% of the step time waits for input (over %.0f%%). Prepare the "
          "data once (scripts/prepare_imagenet.py), give the host more cores, or raise "
          "data.num_parallel_calls.", 100 * share, 100 * INPUT_BOUND_SHARE)
    self._start, self._wait, self._paused, self._steps = now, 0.0, 0.0, 0
    return {"input_wait": share, "input_wait_secs": per_step}


class StepProfiler:
  """A jax.profiler trace of training steps a..b (train.profile_steps) into
  <workdir>/profile, for TensorBoard's profile tab. `before(step)` ahead of each
  step's dispatch, `after(step, state)` once it is dispatched; a no-op when off."""

  def __init__(self, profile_steps: str, workdir: str):
    self.window = profile_window(profile_steps)
    self.logdir = os.path.join(workdir, workdir_lib.PROFILE_DIR)
    self.active = False

  def before(self, step: int) -> None:
    if self.window and not self.active and self.window[0] <= step <= self.window[1]:
      import jax
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step >= self.window[1]:
      self.stop(state)

  def __enter__(self) -> "StepProfiler":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def stop(self, state=None) -> None:
    """End the trace (if one runs) once the traced steps have run on the device."""
    if self.active:
      import jax
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
