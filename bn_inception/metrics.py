"""Metrics: clu collections for train/eval, top-k accuracy, and a JSONL writer.

(No `from __future__ import annotations` here: clu reads the annotations.)
"""


import json
import os
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metric_writers, metrics

from bn_inception import workdir as workdir_lib


def topk_correct(logits, labels, k: int):
  """1.0 where the label is among the k highest logits, ties counted against it.

  Correct iff every score is finite and #(other classes scoring >= the label's
  score) < k, so a network that outputs a constant scores 0, never 100%, and one
  that outputs NaN or inf anywhere in a row gets that example wrong (NaN compares
  false: counting comparisons alone would score NaN rows as correct). k above the
  class count is clipped.
  """
  k = min(k, logits.shape[-1])
  label_score = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  higher = jnp.sum(logits > label_score, axis=-1)
  ties = jnp.sum(logits == label_score, axis=-1) - 1
  return ((higher + ties < k) & nonfinite_rows(logits, invert=True)).astype(jnp.float32)


def nonfinite_rows(logits, invert: bool = False):
  """True where a row of scores holds a NaN or inf (invert: where it is all finite)."""
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return finite if invert else ~finite


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Average.from_output("accuracy")
  grad_norm: metrics.Average.from_output("grad_norm")
  learning_rate: metrics.LastValue.from_output("learning_rate")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Average.from_output("accuracy")
  top5_accuracy: metrics.Average.from_output("top5_accuracy")
  nonfinite_fraction: metrics.Average.from_output("nonfinite_fraction")


def eval_outputs(logits, labels) -> dict:
  """Per-example values the eval metrics average."""
  return {"loss": cross_entropy(logits, labels),
          "accuracy": topk_correct(logits, labels, 1),
          "top5_accuracy": topk_correct(logits, labels, 5),
          "nonfinite_fraction": nonfinite_rows(logits).astype(jnp.float32)}


def collection_to_json(collection) -> dict:
  """A clu Collection's state (e.g. the Average totals and counts of the train/*
  rows not yet written) as JSON: {field: {leaf: [dtype, value]}}. Every float32
  value round-trips exactly through the JSON float."""
  state = flax.serialization.to_state_dict(collection)
  return jax.tree.map(lambda x: [str(np.asarray(x).dtype), np.asarray(x).tolist()], state,
                      is_leaf=lambda x: not isinstance(x, dict))


def collection_from_json(cls, data: dict):
  """The inverse of `collection_to_json` for collection class `cls`."""
  state = jax.tree.map(lambda pair: jnp.asarray(pair[1], dtype=pair[0]), data,
                       is_leaf=lambda x: isinstance(x, list))
  return flax.serialization.from_state_dict(cls.empty(), state)


class JsonlWriter(metric_writers.MetricWriter):
  """Scalars as one JSON object per line in <workdir>/metrics.jsonl (read back by
  workdir.read_metrics: scripts/report.py, the sweep's status, Figure 1)."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path) and os.path.getsize(path):
      with open(path, "rb+") as f:  # a line cut by a crash must not swallow the next row
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
          f.write(b"\n")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(workdir: str):
  """TensorBoard events + log lines (process 0), plus metrics.jsonl."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(workdir_lib.metrics_path(workdir)),
  ])
