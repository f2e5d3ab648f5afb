"""1-crop classification over every example of the eval split exactly once: the
training loop's periodic evaluation (eval/accuracy, loss, top5_accuracy,
nonfinite_fraction, num_examples). Top-k is `metrics.topk_correct`: ties and
non-finite outputs count against the label."""

from __future__ import annotations

import functools
from typing import Callable, Dict

from bn_inception import metrics as metrics_lib
from bn_inception.evaluators import common


def _metrics(variables, batch, *, predict_fn: Callable):
  """Masked metrics of one padded global batch."""
  logits = predict_fn(variables, batch["image"])
  outputs = metrics_lib.eval_outputs(logits, batch["label"])
  return metrics_lib.EvalMetrics.single_from_model_output(mask=batch["mask"], **outputs)


class Evaluator:
  """predict_fn(variables, uint8 images) -> logits; `batches()` -> process-local batches
  {"image", "label", "mask"}, the last one padded (mask False on the padding)."""

  def __init__(self, predict_fn: Callable, batches: Callable, mesh):
    self.batches, self.mesh = batches, mesh
    self.step = common.jit_on_mesh(functools.partial(_metrics, predict_fn=predict_fn), mesh)

  def run(self, variables) -> Dict[str, float]:
    total = None
    for batch in common.global_batches(self.batches(), self.mesh):
      m = self.step(variables, batch)
      total = m if total is None else total.merge(m)
    out = {k: float(v) for k, v in total.compute().items()}
    out["num_examples"] = int(total.accuracy.count)
    return out


def create(entry, context: common.LoopContext) -> Evaluator:
  del entry  # no fields
  return Evaluator(common.logits_fn(context.network), context.eval_batches, context.mesh)
