"""Multi-crop evaluation's numeric core (Sec. 4.2.3, Figure 4): crops -> probabilities
-> averaged over crops and networks -> top-1/top-5 error.

It knows networks only as `predict_fns`: functions from a global batch of uint8
crops (sharded over the data-parallel Mesh) to softmax probabilities, as
big_vision's evaluators take a predict_fn. Loading them from training workdirs
is `ensemble.py`'s job; the command line is scripts/evaluate.py.

Every example of an `ImageSet` is cropped by one scheme of `data/multicrop.py`
(1, 10 or 144 crops); the crops stream through the networks in fixed-size
batches (the last one padded and masked). Per example, a network's softmax
PROBABILITIES are averaged over its crops, and the networks' crop-averaged
probabilities are averaged over networks (never logits: a network cannot
outvote the others by being overconfident). Top-k uses `metrics.topk_correct`
(ties and non-finite outputs count against the label). Every example is counted
exactly once whatever the batch size; the count is reported beside the errors.
An ensemble is also compared with its best member on the same examples (top-1):
how many each gets right that the other gets wrong, and McNemar's exact test of
whether the difference is more than chance (`against_best_member`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bn_inception import metrics as metrics_lib
from bn_inception import progress, sharding
from bn_inception.data import DataError, multicrop

TOP_K = (1, 5)
ENSEMBLE = "ensemble"


# --------------------------------------------------------------------------- averaging and counting


class CropAverager:
  """Sums each example's crop probabilities; hands an example over when all its crops are in.

  The sum of an example starts from its carried partial sum and adds crops in stream
  order, so the result does not depend on where batches happen to split it.
  """

  def __init__(self, num_members: int, num_classes: int, crops_per_example: int):
    self.shape = (num_members, num_classes)
    self.crops = crops_per_example
    self.open: Dict[int, list] = {}

  def add(self, positions, labels, probs, mask):
    """probs: [members, B, classes]; returns (positions [E], labels [E], means [members, E, C])."""
    valid = np.asarray(mask, bool)
    positions, labels = np.asarray(positions)[valid], np.asarray(labels)[valid]
    probs = np.asarray(probs, np.float32)[:, valid]
    unique, first, inverse = np.unique(positions, return_index=True, return_inverse=True)
    sums = np.zeros((self.shape[0], len(unique), self.shape[1]), np.float32)
    counts = np.zeros(len(unique), np.int64)
    for j, p in enumerate(unique):
      if p in self.open:
        sums[:, j], counts[j], _ = self.open.pop(p)
    for m in range(self.shape[0]):
      np.add.at(sums[m], inverse, probs[m])
    counts += np.bincount(inverse, minlength=len(unique))
    done = []
    for j, p in enumerate(unique):
      if counts[j] > self.crops:
        raise RuntimeError(f"Example {p} received {counts[j]} crops, more than {self.crops}.")
      if counts[j] == self.crops:
        done.append(j)
      else:
        self.open[int(p)] = [sums[:, j], counts[j], labels[first[j]]]
    done = np.asarray(done, np.int64)
    return unique[done], labels[first[done]], sums[:, done] / np.float32(self.crops)


def _topk_counts(probs, labels, mask):
  """[rows, n, C] probabilities -> [rows, len(TOP_K) + 3]: top-k correct counts over the
  masked examples; the count of those whose probabilities are not all finite; the
  count the LAST row (the ensemble) gets right at top-1 and this row wrong; and the
  count this row gets right and the last row wrong."""
  right = {k: jax.vmap(lambda p, k=k: metrics_lib.topk_correct(p, labels, k))(probs) * mask
           for k in TOP_K}
  nonfinite = jax.vmap(metrics_lib.nonfinite_rows)(probs) * mask
  top1 = right[1]
  last = top1[-1]
  columns = ([right[k].sum(1) for k in TOP_K]
             + [nonfinite.sum(1), (last * (1 - top1)).sum(1), (top1 * (1 - last)).sum(1)])
  return jnp.stack(columns, 1).astype(jnp.int32)


class ErrorTally:
  """Top-k correct counts per row (members, then the ensemble) over finished examples,
  and how many of them had non-finite outputs (counted wrong)."""

  def __init__(self, num_rows: int, num_classes: int, chunk: int = 256):
    self.correct = np.zeros((num_rows, len(TOP_K) + 3), np.int64)
    self.count = 0
    self.chunk, self.num_classes = chunk, num_classes
    self._total: Optional[Tuple[np.ndarray, int]] = None  # _gathered's, until more arrive
    self._probs: List[np.ndarray] = []
    self._labels: List[np.ndarray] = []
    self._count_fn = jax.jit(_topk_counts)

  def add(self, probs: np.ndarray, labels: np.ndarray):
    """probs [rows, E, C] for E finished examples."""
    if len(labels):
      self._probs.append(probs)
      self._labels.append(labels)
    if sum(len(l) for l in self._labels) >= self.chunk:
      self._flush()

  def _flush(self):
    if not self._labels:
      return
    probs, labels = np.concatenate(self._probs, 1), np.concatenate(self._labels)
    self._probs, self._labels = [], []
    self._total = None
    for start in range(0, len(labels), self.chunk):
      p, l = probs[:, start:start + self.chunk], labels[start:start + self.chunk]
      n = len(l)
      pad = self.chunk - n  # fixed shapes: one compilation
      p = np.pad(p, ((0, 0), (0, pad), (0, 0)))
      mask = np.arange(self.chunk) < n
      self.correct += np.asarray(self._count_fn(p, np.pad(l, (0, pad)).astype(np.int32),
                                                mask.astype(np.float32)))
      self.count += n

  def _gathered(self) -> Tuple[np.ndarray, int]:
    """The counts over every process's examples (one all-gather per new data)."""
    self._flush()
    if self._total is not None:
      return self._total
    correct, count = self.correct, self.count
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      gathered = multihost_utils.process_allgather(
          np.concatenate([correct.ravel(), [count]]).astype(np.int64))
      total = np.asarray(gathered).reshape(jax.process_count(), -1).sum(0)
      correct, count = total[:-1].reshape(correct.shape), int(total[-1])
    self._total = correct, count
    return self._total

  def totals(self) -> Tuple[np.ndarray, np.ndarray, int]:
    """(top-k correct counts [rows, len(TOP_K)], non-finite counts [rows], examples)."""
    correct, count = self._gathered()
    n = len(TOP_K)
    return correct[:, :n], correct[:, n], count

  def disagreements(self) -> np.ndarray:
    """[rows, 2]: per row, the examples the last row (the ensemble) gets right at top-1
    and this row wrong, and those this row gets right and the last row wrong."""
    return self._gathered()[0][:, len(TOP_K) + 1:]


def mcnemar_p(only_a: int, only_b: int) -> float:
  """McNemar's exact test (two-sided): the chance, if A and B were equally accurate,
  of a split of their disagreements at least this uneven (binomial, p = 1/2)."""
  n = only_a + only_b
  if n == 0:
    return 1.0
  from scipy import stats
  return float(stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


def average_members(member_means: np.ndarray) -> np.ndarray:
  """[members, E, C] crop-averaged probabilities -> rows: each member, then (M > 1) the ensemble."""
  if len(member_means) == 1:
    return member_means
  return np.concatenate([member_means, member_means.mean(0, keepdims=True)], 0)


# --------------------------------------------------------------------------- the evaluation pass


def _local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in its local batch order."""
  if jax.process_count() == 1:
    return np.asarray(array)
  shards = {s.index[0].start or 0: s for s in array.addressable_shards}
  return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])


@dataclasses.dataclass
class Geometry:
  """How crops are made (from the first member's data section)."""
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
    d = data_config
    return cls(image_size=h, crop_fraction=float(d.get("eval_crop_fraction", 1.0)),
               resize_method=d.get("resize_method", "bilinear"),
               antialias=bool(d.get("antialias", False)),
               num_parallel_calls=int(d.get("num_parallel_calls", -1)))


def evaluate(predict_fns: Mapping[str, Callable[[jax.Array], jax.Array]],
             images: multicrop.ImageSet, crops: int, geometry: Geometry, batch_size: int,
             num_classes: int, mesh=None) -> dict:
  """One pass over every example of `images` with `crops` crops each; one row per
  network of `predict_fns` (name -> predict_fn) and, for several, the ensemble.
  `batch_size` counts crops per global batch. Progress (crops done/total, crops/s,
  ETA) is shown by the first process for its share of the crops."""
  import tensorflow as tf
  names = list(predict_fns)
  if not names:
    raise ValueError("No networks to evaluate.")
  mesh = mesh or sharding.create_mesh()
  if batch_size <= 0 or batch_size % mesh.size or batch_size % jax.process_count():
    raise ValueError(f"--batch_size={batch_size} counts crops per GLOBAL batch and must be a "
                     f"positive multiple of the {mesh.size} devices.")
  pc, pi = jax.process_count(), jax.process_index()
  local_batch, n = batch_size // pc, images.num_examples
  positions = np.arange(pi, n, pc)  # this process's examples
  num_steps = math.ceil(math.ceil(n / pc) * crops / local_batch)  # the same on every process
  ds = multicrop.crop_dataset(images, positions, crops, geometry.image_size,
                              geometry.crop_fraction, geometry.resize_method,
                              geometry.antialias, geometry.num_parallel_calls)
  ds = ds.batch(local_batch).prefetch(2)
  it = ds.as_numpy_iterator()
  averager = CropAverager(len(names), num_classes, crops)
  tally = ErrorTally(len(names) + (len(names) > 1), num_classes)
  size, channels = geometry.image_size, images.channels
  start, finished = time.time(), 0  # examples of this process done (they finish in order)
  who = ", ".join(names) if len(names) <= 3 else f"{len(names)} networks"
  bar = progress.Progress(f"{crops} crop(s), {who}", len(positions) * crops, "crops",
                          show=pi == 0)
  for step in range(num_steps):
    try:
      local = next(it, None)
    except tf.errors.OpError as e:
      culprit = images.find_undecodable(positions[finished:finished + 64])
      raise DataError(f"Evaluation input failed at batch {step} of {images.name}: "
                      f"{culprit or f'{type(e).__name__}: {str(e)[:300]}'}. Multi-crop "
                      f"evaluation needs every image decodable.") from e
    if local is None:
      local = {"image": np.zeros((0, size, size, channels), np.uint8),
               "label": np.zeros((0,), np.int32), "position": np.zeros((0,), np.int64)}
    b = len(local["label"])
    mask = np.arange(local_batch) < b
    image = np.zeros((local_batch, size, size, channels), np.uint8)
    image[:b] = local["image"]
    global_images = sharding.global_batch({"image": image}, mesh)["image"]
    outputs = [predict_fns[name](global_images) for name in names]  # dispatch all, then wait
    probs = np.stack([_local_rows(o) for o in outputs])
    pos = np.pad(local["position"], (0, local_batch - b))
    labels = np.pad(local["label"], (0, local_batch - b))
    _, done_labels, means = averager.add(pos, labels, probs, mask)
    finished += len(done_labels)
    tally.add(average_members(means), done_labels)
    bar.update(b)
  bar.close()
  if averager.open:
    raise RuntimeError(f"{len(averager.open)} examples did not receive all {crops} crops.")
  correct, nonfinite, count = tally.totals()
  seconds = time.time() - start
  if count != n:
    raise RuntimeError(f"Counted {count} examples, but {images.name} has {n}.")
  rows = []
  for name, c, bad in zip(names + ([ENSEMBLE] if len(names) > 1 else []), correct, nonfinite):
    rows.append({"model": name, "resolution": geometry.image_size, "crops": crops,
                 "models": len(names) if name == ENSEMBLE else 1,
                 **{f"top{k}_error": 100.0 * (1 - int(ck) / count) for k, ck in zip(TOP_K, c)},
                 "examples": count, "nonfinite": int(bad)})
  if len(names) > 1:
    best = int(np.argmax(correct[:len(names), 0]))  # the first of equally good members
    only_ensemble, only_member = (int(v) for v in tally.disagreements()[best])
    rows[-1]["against_best_member"] = {
        "member": names[best], "only_ensemble_right": only_ensemble,
        "only_member_right": only_member, "p_value": mcnemar_p(only_ensemble, only_member)}
  return {"crops": crops, "rows": rows, "seconds": seconds,
          "crops_per_second": count * crops / max(seconds, 1e-9)}


# --------------------------------------------------------------------------- report


# Figure 4 of the paper (ImageNet validation, 50,000 images); None: not given.
PAPER_FIGURE4 = (
    ("GoogLeNet ensemble", 224, 144, 7, None, 6.67),
    ("Deep Image low-res", 256, None, 1, None, 7.96),
    ("Deep Image high-res", 512, None, 1, 24.88, 7.42),
    ("Deep Image ensemble", None, None, None, None, 5.98),
    ("BN-Inception single crop", 224, 1, 1, 25.2, 7.82),
    ("BN-Inception multicrop", 224, 144, 1, 21.99, 5.82),
    ("BN-Inception ensemble", 224, 144, 6, 20.1, 4.9),
)


def paper_rows() -> List[dict]:
  return [{"model": f"paper: {m}", "resolution": r, "crops": c, "models": n,
           "top1_error": t1, "top5_error": t5, "examples": 50_000}
          for m, r, c, n, t1, t5 in PAPER_FIGURE4]


def format_table(rows: Sequence[dict]) -> str:
  """A Figure-4-style markdown table."""
  head = ("| Model | Resolution | Crops | Models | Top-1 error | Top-5 error | Examples "
          "| Non-finite outputs |")
  lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
  def cell(v, fmt="{}"):
    return "–" if v is None else fmt.format(v)
  for r in rows:
    lines.append(f"| {r['model']} | {cell(r['resolution'])} | {cell(r['crops'])} | "
                 f"{cell(r['models'])} | {cell(r['top1_error'], '{:.2f}%')} | "
                 f"{cell(r['top5_error'], '{:.2f}%')} | {r['examples']:,} | "
                 f"{cell(r.get('nonfinite'), '{:,}')} |")
  return "\n".join(lines)


def against_best_member_line(row: dict) -> str:
  """One sentence on an ensemble row's paired comparison with its best member."""
  b = row["against_best_member"]
  return (f"{row['crops']} crop(s): the ensemble of {row['models']} against its best member, "
          f"{b['member']} (top-1, the same {row['examples']:,} examples): right on "
          f"{b['only_ensemble_right']:,} that it gets wrong, wrong on {b['only_member_right']:,} "
          f"that it gets right; McNemar's exact test p = {b['p_value']:.3g}.")


def write_report(output_dir: str, report: dict) -> None:
  if jax.process_index() > 0:
    return
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  lines = ["# Evaluation", "", f"`{report['command']}`", "",
           f"Split: {report['split']} ({report['data']}), {report['num_examples']:,} examples; "
           f"{report['devices']} device(s), batch {report['batch_size']} crops.", "",
           "Members:", ""]
  for m in report["members"]:
    pop = (f", population statistics over {m['population_stats_batches']} training batches"
           if m["population_stats_batches"] else "")
    lines.append(f"* {m['name']}: {m['workdir']} step {m['step']} ({m['model']}{pop})")
  lines += ["", format_table([r for res in report["results"] for r in res["rows"]]
                            + report.get("paper", [])), ""]
  for res in report["results"]:
    lines.append(f"{res['crops']} crop(s): {res['seconds']:.1f} s "
                 f"({res['crops_per_second']:.0f} crops/s).")
  lines += [""] + [against_best_member_line(r) for res in report["results"]
                   for r in res["rows"] if "against_best_member" in r]
  with open(os.path.join(output_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
