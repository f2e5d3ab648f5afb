"""Ensemble evaluation (Sec. 4.2.3, Figure 4): multi-crop, multi-checkpoint top-1/top-5 error.

Each member is a training workdir: its saved `config.json` rebuilds the model
and data source, its checkpoint (newest, or a chosen step) is restored through
the training loop's own Trainer/Checkpointer. Every example of the split is
cropped by one scheme of `data/multicrop.py` (1, 10 or 144 crops); the crops
stream through the network in fixed-size batches sharded over the devices of
the data-parallel Mesh (the last batch padded and masked). Per example, the
member's softmax PROBABILITIES are averaged over its crops, and the members'
crop-averaged probabilities are averaged over members (never logits: a member
cannot outvote the others by being overconfident). Top-k uses
`metrics.topk_correct` (ties count against the label). Every example is counted
exactly once whatever the batch size; the count is reported beside the errors.

Members must share the architecture (`model.name`), the class count and the
input resolution (crops are shared); they may differ in anything else (init
scale, dropout, per-activation BN, ... as the paper's six members do) and each
normalises its inputs with its own data.mean/std. The examples come from the
FIRST member's data section (after --override).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bn_inception import checkpoint as ckpt_lib
from bn_inception import metrics as metrics_lib
from bn_inception import sharding
from bn_inception.checkpoint import CheckpointError
from bn_inception.data import DataError, multicrop
from bn_inception.models import state_variables

TOP_K = (1, 5)
ENSEMBLE = "ensemble"


# --------------------------------------------------------------------------- members


@dataclasses.dataclass(frozen=True)
class MemberSpec:
  workdir: str
  step: Optional[int] = None   # None: the newest usable checkpoint


@dataclasses.dataclass
class Member:
  """One restored network: `predict` maps global uint8 crops to softmax probabilities."""
  name: str
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  num_classes: int
  image_shape: Tuple[int, int, int]
  predict: Callable[[jax.Array], jax.Array]
  source: object = None
  population_stats_batches: int = 0


def parse_member(text: str, base_dir: str = "", step: Optional[int] = None) -> MemberSpec:
  """'workdir' or 'workdir@STEP'; a relative workdir is taken relative to base_dir."""
  text = text.strip()
  head, sep, tail = text.rpartition("@")
  if sep and tail.isdigit():
    text, step = head, int(tail)
  if not text:
    raise ValueError("An ensemble member has an empty workdir.")
  return MemberSpec(os.path.normpath(os.path.join(base_dir, os.path.expanduser(text))), step)


def expand_workdirs(entries: Sequence[str]) -> List[str]:
  """Shell patterns (e.g. 'runs/ensemble/x30_*') -> the matching run folders, sorted."""
  import glob
  out = []
  for entry in entries:
    if any(ch in entry for ch in "*?["):
      head, sep, tail = entry.rpartition("@")
      pattern, step = (head, sep + tail) if sep and tail.isdigit() else (entry, "")
      found = sorted(d for d in glob.glob(os.path.expanduser(pattern))
                     if os.path.isfile(os.path.join(d, "config.json")))
      if not found:
        raise FileNotFoundError(f"--workdirs pattern {pattern!r} matches no training workdir "
                                "(a folder with config.json).")
      out += [d + step for d in found]
    else:
      out.append(entry)
  return out


def read_ensemble_file(path: str, step: Optional[int] = None) -> List[MemberSpec]:
  """One member per line: `workdir` or `workdir@STEP`; `#` starts a comment; relative
  paths are relative to the file's folder."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Ensemble file {path} does not exist.")
  base = os.path.dirname(os.path.abspath(path))
  specs = []
  with open(path) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line:
        specs.append(parse_member(line, base, step))
  if not specs:
    raise ValueError(f"Ensemble file {path} lists no workdirs (one per line).")
  return specs


def member_names(specs: Sequence[MemberSpec]) -> List[str]:
  """Short unique names: the workdir's last folder (+ @step), numbered when repeated."""
  names = [os.path.basename(s.workdir.rstrip(os.sep)) + (f"@{s.step}" if s.step is not None
                                                         else "") for s in specs]
  seen: Dict[str, int] = {}
  out = []
  for n in names:
    seen[n] = seen.get(n, 0) + 1
    out.append(n if names.count(n) == 1 else f"{n}#{seen[n]}")
  return out


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, ckpt_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    raise CheckpointError(f"{workdir} has no {ckpt_lib.CONFIG_FILE}: not a training workdir "
                          f"(scripts/train.py writes it there).")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")
  if isinstance(current, str):
    return text
  value = ast.literal_eval(text)
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, (list, tuple)):
    value = list(value)
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]):
  """'data.field=value' / 'train.field=value' overrides of a member's saved config."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep or not key.startswith(("data.", "train.")):
      raise ValueError(f"--override={item!r}: write data.<field>=<value> or "
                       f"train.<field>=<value> (the model must stay as it was trained).")
    section, field = key.split(".", 1)
    if field not in config[section]:
      raise ValueError(f"--override={item!r}: the member config has no {key}; "
                       f"{section} fields: {sorted(config[section])}.")
    try:
      value = _parse_value(text, config[section][field])
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"--override={item!r}: cannot read the value ({e}).") from None
    with config.unlocked():
      config[section][field] = value
  return config


def probabilities(state, images, *, normalize: Callable):
  """Softmax probabilities of a batch of uint8 crops (inference-mode BN)."""
  logits = state.apply_fn(state_variables(state), normalize(images), train=False)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _checkpoint_steps(ckpt_dir: str) -> List[int]:
  if not os.path.isdir(ckpt_dir):
    return []
  return sorted(int(e.name) for e in os.scandir(ckpt_dir) if e.is_dir() and e.name.isdigit())


def _restore(checkpointer, abstract_state, step: Optional[int], name: str):
  if step is None:
    restored = checkpointer.restore(abstract_state)
    if restored is None:
      raise CheckpointError(f"Member {name}: no checkpoint in {checkpointer.directory}.")
    return restored[0]
  import orbax.checkpoint as ocp
  steps = sorted(checkpointer.manager.all_steps())
  if step not in steps:
    raise CheckpointError(f"Member {name}: no checkpoint at step {step} in "
                          f"{checkpointer.directory}; it has steps {steps}.")
  try:
    restored = checkpointer.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
  except Exception as e:  # orbax raises many types for damaged or mismatched files
    raise CheckpointError(f"Member {name}: the checkpoint at step {step} in "
                          f"{checkpointer.directory} could not be restored "
                          f"({type(e).__name__}: {str(e)[:300]}).") from e
  return restored["state"]


def load_member(spec: MemberSpec, name: str, mesh, overrides: Sequence[str] = (),
                population_stats_batches: int = 0) -> Member:
  """Rebuild a workdir's Trainer from its config.json and restore its checkpoint."""
  from bn_inception import train  # heavy; only when members are loaded
  config = apply_overrides(load_config(spec.workdir), overrides)
  ckpt_dir = os.path.join(spec.workdir, "checkpoints")
  if not _checkpoint_steps(ckpt_dir):
    raise CheckpointError(f"Member {name}: {spec.workdir} has no checkpoint (no step folders "
                          f"in {ckpt_dir}); train it first or remove it from the ensemble.")
  with config.unlocked():
    config.train.eval_batch_size = mesh.size  # the Trainer's own eval is not used here
    if not population_stats_batches and config.train.batch_size % mesh.size:
      # Only training-mode BN reads the batch size; inference does not, so any valid
      # value restores the same network on this mesh.
      group = config.bn.group_size if config.bn.get("stats_mode") == "group" else 1
      config.train.batch_size = math.lcm(mesh.size, max(1, group))
  try:
    trainer = train.Trainer(config, mesh=mesh)
  except ValueError as e:
    hint = (" (set --override=train.batch_size=<multiple of the device count> for the "
            "population statistics)" if population_stats_batches else "")
    raise ValueError(f"Member {name} ({spec.workdir}): {e}{hint}") from e
  checkpointer = ckpt_lib.Checkpointer(spec.workdir, every_steps=1, keep=None)
  try:
    state = _restore(checkpointer, trainer.abstract_state, spec.step, name)
  finally:
    checkpointer.close()
  state = jax.device_put(state, trainer.state_sharding)
  used_batches = 0
  if population_stats_batches:
    if state.batch_stats:  # Alg. 2, step 10: exact averages over training batches
      state = trainer.population_statistics(state, population_stats_batches)
      used_batches = population_stats_batches
    else:
      print(f"member {name} has no BN layers: no population statistics to compute", flush=True)
  predict = jax.jit(functools.partial(probabilities, normalize=trainer.source.normalize),
                    in_shardings=(trainer.state_sharding, sharding.batch_sharding(mesh)),
                    out_shardings=sharding.batch_sharding(mesh))
  return Member(name=name, workdir=spec.workdir, step=int(state.step), config=config,
                num_classes=trainer.source.num_classes,
                image_shape=tuple(trainer.source.image_shape),
                predict=functools.partial(predict, state), source=trainer.source,
                population_stats_batches=used_batches)


def check_compatible(members: Sequence[Member]):
  """Refuse an ensemble whose members cannot be averaged crop by crop."""
  if not members:
    raise ValueError("No ensemble members: give --workdirs and/or --ensemble.")
  first = members[0]
  for m in members[1:]:
    checks = (("architecture (config.model.name)", m.config.model.name, first.config.model.name),
              ("number of classes", m.num_classes, first.num_classes),
              ("input shape (config.data.image_size, channels)", m.image_shape,
               first.image_shape))
    for what, theirs, ours in checks:
      if theirs != ours:
        raise ValueError(f"Ensemble member {m.name} ({m.workdir}) has {what} {theirs!r}, but "
                         f"member {first.name} has {ours!r}; members must share it.")


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
  """[rows, n, C] probabilities -> [rows, len(TOP_K)] correct counts over the masked examples."""
  def one(p):
    return jnp.stack([jnp.sum(metrics_lib.topk_correct(p, labels, k) * mask) for k in TOP_K])
  return jax.vmap(one)(probs).astype(jnp.int32)


class ErrorTally:
  """Top-k correct counts per row (members, then the ensemble) over finished examples."""

  def __init__(self, num_rows: int, num_classes: int, chunk: int = 256):
    self.correct = np.zeros((num_rows, len(TOP_K)), np.int64)
    self.count = 0
    self.chunk, self.num_classes = chunk, num_classes
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
    for start in range(0, len(labels), self.chunk):
      p, l = probs[:, start:start + self.chunk], labels[start:start + self.chunk]
      n = len(l)
      pad = self.chunk - n  # fixed shapes: one compilation
      p = np.pad(p, ((0, 0), (0, pad), (0, 0)))
      mask = np.arange(self.chunk) < n
      self.correct += np.asarray(self._count_fn(p, np.pad(l, (0, pad)).astype(np.int32),
                                                mask.astype(np.float32)))
      self.count += n

  def totals(self) -> Tuple[np.ndarray, int]:
    self._flush()
    correct, count = self.correct, self.count
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      gathered = multihost_utils.process_allgather(
          np.concatenate([correct.ravel(), [count]]).astype(np.int64))
      total = np.asarray(gathered).reshape(jax.process_count(), -1).sum(0)
      correct, count = total[:-1].reshape(correct.shape), int(total[-1])
    return correct, count


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
  def of(cls, member: Member) -> "Geometry":
    h, w, _ = member.image_shape
    if h != w:
      raise ValueError(f"Member {member.name}: multi-crop evaluation needs square inputs, "
                       f"not {h}x{w}.")
    d = member.config.data
    return cls(image_size=h, crop_fraction=float(d.get("eval_crop_fraction", 1.0)),
               resize_method=d.get("resize_method", "bilinear"),
               antialias=bool(d.get("antialias", False)),
               num_parallel_calls=int(d.get("num_parallel_calls", -1)))


def evaluate(members: Sequence[Member], images: multicrop.ImageSet, crops: int,
             geometry: Geometry, batch_size: int, mesh=None) -> dict:
  """One pass over every example of `images` with `crops` crops each; one row per member
  (and the ensemble). `batch_size` counts crops per global batch."""
  import tensorflow as tf
  check_compatible(members)
  mesh = mesh or sharding.create_mesh()
  if batch_size <= 0 or batch_size % mesh.size or batch_size % jax.process_count():
    raise ValueError(f"--batch_size={batch_size} counts crops per GLOBAL batch and must be a "
                     f"positive multiple of the {mesh.size} devices.")
  pc, pi = jax.process_count(), jax.process_index()
  local_batch, n = batch_size // pc, images.num_examples
  positions = np.arange(pi, n, pc)  # this process's examples
  num_steps = math.ceil(math.ceil(n / pc) * crops / local_batch)  # the same on every process
  num_classes = members[0].num_classes
  ds = multicrop.crop_dataset(images, positions, crops, geometry.image_size,
                              geometry.crop_fraction, geometry.resize_method,
                              geometry.antialias, geometry.num_parallel_calls)
  ds = ds.batch(local_batch).prefetch(2)
  it = ds.as_numpy_iterator()
  averager = CropAverager(len(members), num_classes, crops)
  tally = ErrorTally(len(members) + (len(members) > 1), num_classes)
  size, channels = geometry.image_size, images.channels
  start, finished = time.time(), 0  # examples of this process done (they finish in order)
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
    outputs = [m.predict(global_images) for m in members]  # dispatch all, then wait
    probs = np.stack([_local_rows(o) for o in outputs])
    pos = np.pad(local["position"], (0, local_batch - b))
    labels = np.pad(local["label"], (0, local_batch - b))
    _, done_labels, means = averager.add(pos, labels, probs, mask)
    finished += len(done_labels)
    tally.add(average_members(means), done_labels)
  if averager.open:
    raise RuntimeError(f"{len(averager.open)} examples did not receive all {crops} crops.")
  correct, count = tally.totals()
  seconds = time.time() - start
  if count != n:
    raise RuntimeError(f"Counted {count} examples, but {images.name} has {n}.")
  names = [m.name for m in members] + ([ENSEMBLE] if len(members) > 1 else [])
  rows = []
  for name, c in zip(names, correct):
    rows.append({"model": name, "resolution": geometry.image_size, "crops": crops,
                 "models": len(members) if name == ENSEMBLE else 1,
                 **{f"top{k}_error": 100.0 * (1 - int(ck) / count) for k, ck in zip(TOP_K, c)},
                 "examples": count})
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
  head = "| Model | Resolution | Crops | Models | Top-1 error | Top-5 error | Examples |"
  lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
  def cell(v, fmt="{}"):
    return "–" if v is None else fmt.format(v)
  for r in rows:
    lines.append(f"| {r['model']} | {cell(r['resolution'])} | {cell(r['crops'])} | "
                 f"{cell(r['models'])} | {cell(r['top1_error'], '{:.2f}%')} | "
                 f"{cell(r['top5_error'], '{:.2f}%')} | {r['examples']:,} |")
  return "\n".join(lines)


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
  with open(os.path.join(output_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def run(specs: Sequence[MemberSpec], crops: Sequence[int], split: str = "eval",
        output_dir: str = "", batch_size: int = 256, population_stats_batches: int = 0,
        overrides: Sequence[str] = (), command: str = "", mesh=None,
        paper: bool = False) -> dict:
  """Load the members, evaluate each crop scheme, print the table, write the report."""
  if not specs:
    raise ValueError("No ensemble members: give --workdirs and/or --ensemble.")
  for k in crops:
    if k not in multicrop.CROP_SCHEMES:
      raise ValueError(f"--crops={k} is not a crop scheme; known: {multicrop.CROP_SCHEMES}.")
  if population_stats_batches < 0:
    raise ValueError(f"--population_stats_batches={population_stats_batches} must be >= 0.")
  if mesh is None:  # multi-host evaluation starts like training (config.distributed)
    sharding.maybe_initialize_distributed(load_config(specs[0].workdir))
    mesh = sharding.create_mesh()
  if batch_size <= 0 or batch_size % mesh.size:
    raise ValueError(f"--batch_size={batch_size} counts crops per GLOBAL batch and must be a "
                     f"positive multiple of the {mesh.size} devices.")
  overrides = list(overrides)
  if split not in ("eval", "train"):  # a named TFDS split, e.g. 'validation'
    first = load_config(specs[0].workdir)
    if first.data.get("name") != "imagenet_tfds":
      raise ValueError(f"--split={split!r}: use 'eval' or 'train' ({split!r} names a split "
                       f"only for data.name='imagenet_tfds').")
    overrides.append(f"data.eval_split={split}")
    split = "eval"
  names = member_names(specs)
  architectures = [load_config(s.workdir).model.get("name") for s in specs]
  for name, spec, arch in zip(names, specs, architectures):
    if arch != architectures[0]:  # before restoring anything
      raise ValueError(f"Ensemble member {name} ({spec.workdir}) has architecture "
                       f"(config.model.name) {arch!r}, but member {names[0]} has "
                       f"{architectures[0]!r}; members must share it.")
  members = []
  for spec, name in zip(specs, names):
    members.append(load_member(spec, name, mesh, overrides, population_stats_batches))
    check_compatible(members)
    print(f"loaded {name}: {spec.workdir} step {members[-1].step}", flush=True)
  geometry = Geometry.of(members[0])
  images = multicrop.image_set(members[0].source, split)
  results = []
  for k in crops:
    result = evaluate(members, images, k, geometry, batch_size, mesh)
    results.append(result)
    print(format_table(result["rows"]), flush=True)
    print(f"{k} crop(s): {result['seconds']:.1f} s ({result['crops_per_second']:.0f} crops/s)",
          flush=True)
  report = {
      "command": command, "split": split, "data": images.name,
      "num_examples": images.num_examples, "devices": mesh.size, "batch_size": batch_size,
      "geometry": dataclasses.asdict(geometry),
      "members": [{"name": m.name, "workdir": os.path.abspath(m.workdir), "step": m.step,
                   "model": m.config.model.name, "num_classes": m.num_classes,
                   "image_size": m.image_shape[0],
                   "population_stats_batches": m.population_stats_batches}
                  for m in members],
      "results": results}
  if paper:  # the paper's Figure 4 beside ours
    report["paper"] = paper_rows()
  if len(results) > 1 or paper:
    print(format_table([r for res in results for r in res["rows"]] + report.get("paper", [])),
          flush=True)
  if output_dir:
    write_report(output_dir, report)
  return report
