"""Percentiles over the eval split of the per-example values a model records
(`models.RECORDED`): Figure 1(b, c)'s last-hidden-layer input, as
probe/<name>/p<q>. A model that records nothing gives no results (and no pass)."""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bn_inception.evaluators import common
from bn_inception.models import RECORDED


class Evaluator:
  """record_fn(variables, uint8 images) -> {name: per-example values}; `batches()`
  as classification's; `percentiles` in [0, 100]."""

  def __init__(self, record_fn: Callable, batches: Callable, mesh,
               percentiles: Sequence[float], image_shape: Tuple[int, ...]):
    self.batches, self.mesh, self.percentiles = batches, mesh, tuple(percentiles)
    self._record_fn = record_fn
    self._example = jax.ShapeDtypeStruct((1, *image_shape), jnp.uint8)
    self._step = common.jit_on_mesh(lambda v, batch: record_fn(v, batch["image"]), mesh)
    self._records = None  # whether the model records anything (found out once)

  def run(self, variables) -> Dict[str, float]:
    if self._records is None:
      self._records = bool(jax.eval_shape(self._record_fn, variables, self._example))
    if not self._records:
      return {}
    recorded, masks = [], []
    for batch in common.global_batches(self.batches(), self.mesh):
      recorded.append(self._step(variables, batch))
      masks.append(batch["mask"])
    mask = common.to_host(masks)
    out = {}
    for name in recorded[0]:
      values = common.to_host([r[name] for r in recorded])[mask]
      for q, v in zip(self.percentiles, np.percentile(values, self.percentiles)):
        out[f"{RECORDED}/{name}/p{q}"] = float(v)
    return out


def create(entry, context: common.LoopContext) -> Evaluator:
  return Evaluator(common.recorded_fn(context.network), context.eval_batches, context.mesh,
                   entry.percentiles, context.network.image_shape)
