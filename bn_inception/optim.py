"""Optimizer and learning-rate schedule from `config.optim` (optax).

SGD with momentum (Sec. 4.2.1); L2 weight decay on the weights (kernels) only,
added to the gradient as d/dw (wd/2 * |w|^2), as in TF-slim's l2_regularizer.
"""

from __future__ import annotations

import functools
from typing import Sequence

import optax
from flax import traverse_util

from bn_inception import registry, schema


def decay_interval(c, steps_per_epoch: float | None) -> int:
  """Steps between decays: `decay_epochs` epochs when set (needs the epoch length), else `decay_steps`."""
  if c.decay_epochs > 0:
    if not steps_per_epoch:
      raise ValueError("config.optim.decay_epochs needs the training set size.")
    return max(1, round(c.decay_epochs * steps_per_epoch))
  return c.decay_steps


# The schedules of schema.SCHEDULES: (config.optim, num_steps, steps per epoch) ->
# the schedule after warm-up.

def constant(c, num_steps: int, steps_per_epoch: float | None) -> optax.Schedule:
  return optax.constant_schedule(c.learning_rate)


def exponential(c, num_steps: int, steps_per_epoch: float | None) -> optax.Schedule:
  """lr * decay_rate^(step / decay interval), optionally staircase (Sec. 4.2.1: the
  accelerated BN nets decay 6x faster)."""
  return optax.exponential_decay(c.learning_rate,
                                 transition_steps=decay_interval(c, steps_per_epoch),
                                 decay_rate=c.decay_rate, staircase=c.staircase)


def cosine(c, num_steps: int, steps_per_epoch: float | None) -> optax.Schedule:
  return optax.cosine_decay_schedule(c.learning_rate, max(num_steps - c.warmup_steps, 1))


def learning_rate_schedule(c, num_steps: int, steps_per_epoch: float | None = None
                           ) -> optax.Schedule:
  """`config.optim.schedule` (registered in schema.SCHEDULES), after a linear warm-up
  of `warmup_steps`."""
  main = registry.resolve(schema.SCHEDULES[c.schedule])(c, num_steps, steps_per_epoch)
  if c.warmup_steps > 0:
    warmup = optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps)
    return optax.join_schedules([warmup, main], [c.warmup_steps])
  return main


def weight_decay_mask(params, exempt: Sequence[str] = ()):
  """True for kernels (conv/dense weights) outside the top-level modules `exempt`;
  biases and BN's gamma/beta are not decayed."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {k: k[-1] == "kernel" and k[0] not in exempt for k in flat})


def create_optimizer(c, num_steps: int, steps_per_epoch: float | None = None,
                     decay_exempt: Sequence[str] = ()
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`decay_exempt`: top-level modules without L2 (models.weight_decay_exempt)."""
  schedule = learning_rate_schedule(c, num_steps, steps_per_epoch)
  parts = []
  if c.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  if c.weight_decay > 0:
    parts.append(optax.add_decayed_weights(c.weight_decay, mask=functools.partial(weight_decay_mask, exempt=tuple(decay_exempt))))
  parts.append(optax.sgd(schedule, momentum=c.momentum or None, nesterov=c.nesterov))
  return optax.chain(*parts), schedule
