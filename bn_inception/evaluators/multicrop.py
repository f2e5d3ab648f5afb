"""Multi-crop evaluation (Sec. 4.2.3, Figure 4): crops -> probabilities -> averaged over
crops and networks -> top-1/top-5 error, for scripts/evaluate.py.

It knows networks only as `predict_fns`: name -> function from a global batch of uint8
crops (sharded over the data-parallel Mesh) to softmax probabilities. Every example of
an `ImageSet` is cropped by one scheme of `data/multicrop.py` (1, 10 or 144 crops); the
crops stream through the networks in fixed-size batches (the last one padded and
masked, `data.base.padded`). Per example, a network's softmax PROBABILITIES are averaged
over its crops, and the networks' crop-averaged probabilities over networks (never
logits: a network cannot outvote the others by being overconfident); `tally.py`
counts. Every example is counted exactly once whatever the batch size; the count is
reported beside the errors. An ensemble is also compared with its best member on the
same examples (top-1): how many each gets right that the other gets wrong, and
McNemar's exact test of whether the difference is more than chance.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Dict, Iterator, List, Mapping

import jax
import numpy as np

from bn_inception import progress
from bn_inception.data import DataError, multicrop
from bn_inception.data.base import ImageSet, eval_positions, padded
from bn_inception.evaluators import common
from bn_inception.evaluators.tally import TOP_K, CropAverager, ErrorTally, average_members
from bn_inception.paired import mcnemar_p

ENSEMBLE = "ensemble"
# data section field -> Geometry field, where the data section has it (an in-memory
# source such as MNIST has images at the model's size and no eval crop: the defaults).
_GEOMETRY_FIELDS = {"eval_crop_fraction": "crop_fraction", "resize_method": "resize_method",
                    "antialias": "antialias", "num_parallel_calls": "num_parallel_calls"}


@dataclasses.dataclass
class Geometry:
  """How crops are made: the defaults are an identity crop of images at `image_size`."""
  image_size: int
  crop_fraction: float = 1.0
  resize_method: str = "bilinear"
  antialias: bool = False
  num_parallel_calls: int = -1

  @classmethod
  def of(cls, data_config, image_shape) -> "Geometry":
    """The geometry of a data section (`config.data`) for inputs of `image_shape`."""
    h, w, _ = image_shape
    if h != w:
      raise ValueError(f"Multi-crop evaluation needs square inputs, not {h}x{w}.")
    return cls(image_size=h, **{ours: data_config[field]
                                for field, ours in _GEOMETRY_FIELDS.items()
                                if field in data_config})


@dataclasses.dataclass
class Context:
  """The networks and images an offline evaluation runs on."""
  predict_fns: Mapping[str, Callable[[jax.Array], jax.Array]]
  images: ImageSet
  geometry: Geometry
  num_classes: int
  mesh: jax.sharding.Mesh
  # Pad the last batch with its own crops, not zeros: for networks that normalise by
  # the batch's statistics (bn_statistics=batch), whose padding rows would count.
  pad_with_examples: bool = False


class Evaluator:
  """One pass over every example per crop scheme in `crops`; one row per network and,
  for several, the ensemble. `batch_size` counts crops per global batch."""

  def __init__(self, context: Context, crops, batch_size: int):
    self.c, self.crops, self.batch_size = context, tuple(crops), batch_size
    self.names = list(context.predict_fns)
    # crops -> row name (members, then the ensemble) -> bool[examples]: each example's
    # top-1 correctness, by example position (for paired tests: paired.py).
    self.per_example: Dict[int, Dict[str, np.ndarray]] = {}
    if not self.names:
      raise ValueError("No networks to evaluate.")
    check_request(self.crops, batch_size, context.mesh)

  def run(self) -> Iterator[dict]:
    """Per crop scheme, as each finishes: {crops, rows, seconds, crops_per_second}."""
    for k in self.crops:
      yield self.evaluate(k)

  def evaluate(self, crops: int) -> dict:
    """Progress (crops done/total, crops/s, ETA) is shown by the first process for its
    share of the crops."""
    pc, pi, n = jax.process_count(), jax.process_index(), self.c.images.num_examples
    positions = np.arange(pi, n, pc)  # this process's examples
    who = ", ".join(self.names) if len(self.names) <= 3 else f"{len(self.names)} networks"
    bar = progress.Progress(f"{crops} crop(s), {who}", len(positions) * crops, "crops",
                            show=pi == 0)
    averager = CropAverager(len(self.names), self.c.num_classes, crops)
    tally = ErrorTally(len(self.names) + (len(self.names) > 1), self.c.num_classes,
                       num_examples=n)
    start = time.time()
    for local in self._batches(positions, crops):
      images = global_images(local["image"], self.c.mesh)
      outputs = [self.c.predict_fns[name](images) for name in self.names]  # dispatch, then wait
      probs = np.stack([common.local_rows(o) for o in outputs])
      done, labels, means = averager.add(local["position"], local["label"], probs,
                                         local["mask"])
      tally.add(average_members(means), labels, done)
      bar.update(int(local["mask"].sum()))
    bar.close()
    if averager.open:
      raise RuntimeError(f"{len(averager.open)} examples did not receive all {crops} crops.")
    return self._result(crops, tally, time.time() - start)

  def _batches(self, positions: np.ndarray, crops: int) -> Iterator[common.Batch]:
    """Process-local batches of crops {"image", "label", "position", "mask"}, padded to
    one size; the same number on every process. An undecodable image is named."""
    import tensorflow as tf
    g, images = self.c.geometry, self.c.images
    local_batch = self.batch_size // jax.process_count()
    num_steps = math.ceil(math.ceil(images.num_examples / jax.process_count()) * crops
                          / local_batch)
    _, masks = eval_positions(len(positions) * crops, local_batch, num_batches=num_steps)
    ds = multicrop.crop_dataset(images, positions, crops, g.image_size, g.crop_fraction,
                                g.resize_method, g.antialias, g.num_parallel_calls)
    it = ds.batch(local_batch).prefetch(2).as_numpy_iterator()
    empty = {"image": np.zeros((0, g.image_size, g.image_size, images.channels), np.uint8),
             "label": np.zeros((0,), np.int32), "position": np.zeros((0,), np.int64)}
    seen = 0  # crops of this process read; its examples finish in order
    for step in range(num_steps):
      try:
        local = next(it, None)
      except tf.errors.OpError as e:
        finished = seen // crops
        culprit = images.find_undecodable(positions[finished:finished + 64])
        raise DataError(f"Evaluation input failed at batch {step} of {images.name}: "
                        f"{culprit or f'{type(e).__name__}: {str(e)[:300]}'}. Multi-crop "
                        f"evaluation needs every image decodable.") from e
      local = empty if local is None else local
      seen += len(local["label"])
      yield padded(local, masks[step], repeat_rows=self.c.pad_with_examples)

  def _result(self, crops: int, tally: ErrorTally, seconds: float) -> dict:
    correct, nonfinite, count = tally.totals()
    images, names = self.c.images, self.names
    if count != images.num_examples:
      raise RuntimeError(f"Counted {count} examples, but {images.name} has "
                         f"{images.num_examples}.")
    rows = []
    for name, c, bad in zip(names + ([ENSEMBLE] if len(names) > 1 else []), correct, nonfinite):
      rows.append({"model": name, "resolution": self.c.geometry.image_size, "crops": crops,
                   "models": len(names) if name == ENSEMBLE else 1,
                   **{f"top{k}_error": 100.0 * (1 - int(ck) / count)
                      for k, ck in zip(TOP_K, c)},
                   "examples": count, "nonfinite": int(bad)})
    if len(names) > 1:
      rows[-1]["against_best_member"] = against_best_member(names, correct, tally)
    self.per_example[crops] = dict(zip([r["model"] for r in rows], tally.per_example()))
    return {"crops": crops, "rows": rows, "seconds": seconds,
            "crops_per_second": count * crops / max(seconds, 1e-9)}


def check_request(crops, batch_size: int, mesh) -> None:
  """Refuse crop schemes that do not exist and a batch the devices do not divide."""
  for k in crops:
    if k not in multicrop.CROP_SCHEMES:
      raise ValueError(f"crops={k} is not a crop scheme; known: {multicrop.CROP_SCHEMES}.")
  if batch_size <= 0 or batch_size % mesh.size or batch_size % jax.process_count():
    raise ValueError(f"batch_size={batch_size} counts crops per GLOBAL batch and must be a "
                     f"positive multiple of the {mesh.size} devices.")


def global_images(local_images: np.ndarray, mesh) -> jax.Array:
  """A process-local batch of crops as the global array the predict_fns take."""
  return next(common.global_batches([{"image": local_images}], mesh))["image"]


def against_best_member(names: List[str], correct: np.ndarray, tally: ErrorTally) -> Dict:
  """The ensemble (the tally's last row) against its best member at top-1."""
  best = int(np.argmax(correct[:len(names), 0]))  # the first of equally good members
  only_ensemble, only_member = (int(v) for v in tally.disagreements()[best])
  return {"member": names[best], "only_ensemble_right": only_ensemble,
          "only_member_right": only_member, "p_value": mcnemar_p(only_ensemble, only_member)}


def create(entry, context: Context) -> Evaluator:
  return Evaluator(context, entry.crops, entry.batch_size)
