"""TF-slim's `inception_v2` checkpoints as this project's workdirs (the reference weights).

TF-slim's `nets/inception_v2.py` builds Figure 5 with pool projection 96 in
4c/4d (our default) and names its scopes after the grid: `Mixed_3b` .. `Mixed_5c`
are our inception_3a .. 5b, `Conv2d_1a_7x7` is conv1, `Conv2d_2b_1x1` and
`Conv2d_2c_3x3` are conv2's reduce and 3x3. Branch `Branch_<i>` is our i-th
branch (1x1, 3x3, double 3x3, pool; the stride-2 modules have no 1x1 branch and
number from 0 as well); in a branch the layers are lettered in order, the pool
taking letter a of its branch, and a stride-2 layer is `Conv2d_1a_3x3`.

It differs from the paper's network in two places, which `import_variables`
bridges exactly (inference gives the same logits):
* its BN layers have no gamma (`scale=False`): gamma = 1 here, or none with
  `model.bn_scale=False`;
* its first convolution is a separable conv with a bias, no BN and no L2 (its arg
  scope attaches BN only to `conv2d`). With `model.first_conv_bn=False` the bias
  is copied; into the paper's network (BN after conv1) it is folded into that BN:
  moving mean 0, moving variance v with float32(v + eps) = 1, gamma 1, beta =
  bias, so BN(x) = (x - 0) / sqrt(v + eps) * 1 + bias = x + bias exactly.

TF-slim's classifier has 1001 outputs, class 0 being "background"; TF-slim class
i + 1 is ILSVRC-2012 synset i in sorted order, our (and TFDS's) label i, so
column 0 is dropped. The checkpoint is read with TensorFlow's own checkpoint
reader (no TF-slim needed). Any missing variable, shape mismatch or checkpoint of
another architecture raises TfslimImportError naming the variable, before
anything is written.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from bn_inception.workdir import CheckpointError
from bn_inception.models.figure5 import (DEPTH_MULTIPLIER, ConvRow, InceptionRow, Row,
                                         figure5_table, row_branches)

SCOPE = "InceptionV2"
EPSILON = 1e-3          # inception_v2_arg_scope's batch_norm_epsilon
BACKGROUND_CLASSES = 1  # TF-slim's ImageNet label 0 is "background"
LOGITS = "Logits/Conv2d_1c_1x1"
# Optimizer and averaging slots a training checkpoint may hold beside the weights.
OPTIMIZER_SLOTS = ("/ExponentialMovingAverage", "/Momentum", "/RMSProp", "/RMSProp_1")
STEM = {("conv1", "conv"): "Conv2d_1a_7x7", ("conv2", "reduce"): "Conv2d_2b_1x1",
        ("conv2", "conv"): "Conv2d_2c_3x3"}
MIXED = {"inception_3a": "Mixed_3b", "inception_3b": "Mixed_3c", "inception_3c": "Mixed_4a",
         "inception_4a": "Mixed_4b", "inception_4b": "Mixed_4c", "inception_4c": "Mixed_4d",
         "inception_4d": "Mixed_4e", "inception_4e": "Mixed_5a", "inception_5a": "Mixed_5b",
         "inception_5b": "Mixed_5c"}


class TfslimImportError(CheckpointError):
  """The TF-slim checkpoint does not fit the configured network."""


def unit_scopes(table: Sequence[Row]) -> Dict[Tuple[str, str], str]:
  """(row, unit) -> TF-slim variable scope (without `InceptionV2/`) of every conv unit."""
  out = {}
  for row in table:
    if isinstance(row, ConvRow):
      for branch in row_branches(row):
        for spec in branch.convs:
          out[(row.name, spec.name)] = STEM[(row.name, spec.name)]
    elif isinstance(row, InceptionRow):
      for b, branch in enumerate(row_branches(row)):
        letter = 1 if branch.pool else 0  # the pool is layer 'a' of its branch
        for spec in branch.convs:
          k = spec.patch
          if spec.stride == 2:
            layer = f"Conv2d_1a_{k}x{k}"
          else:
            layer = f"Conv2d_0{'abcd'[letter]}_{k}x{k}"
            letter += 1
          out[(row.name, spec.name)] = f"{MIXED[row.name]}/Branch_{b}/{layer}"
  return out


def folded_variance(epsilon: float) -> np.float32:
  """The float32 v closest to 1 - eps with float32(v) + float32(eps) == 1 (BN = identity)."""
  eps = np.float32(epsilon)
  v = np.float32(1) - eps
  while v + eps > np.float32(1):
    v = np.nextafter(v, np.float32(0))
  while v + eps < np.float32(1):
    v = np.nextafter(v, np.float32(2))
  if v + eps != np.float32(1):
    raise ValueError(f"No float32 variance makes BN the identity for epsilon {epsilon}.")
  return v


class _Reader:
  """Name -> float32 array of a TF checkpoint, with errors that name the variable."""

  def __init__(self, get: Callable[[str], np.ndarray], shapes: Mapping[str, Sequence[int]],
               where: str):
    self.get_raw, self.shapes, self.where = get, dict(shapes), where
    self.used = set()

  def has(self, name: str) -> bool:
    return f"{SCOPE}/{name}" in self.shapes

  def __call__(self, name: str, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    full = f"{SCOPE}/{name}"
    if full not in self.shapes:
      raise TfslimImportError(f"{self.where} has no variable {full}{self._hint()}. "
                              "Nothing was written.")
    if shape is not None and tuple(self.shapes[full]) != tuple(shape):
      raise TfslimImportError(
          f"{full} in {self.where} has shape {tuple(self.shapes[full])}, the configured "
          f"network needs {tuple(shape)} (check model.pool_projection_4cd, "
          "model.first_conv and model.num_classes). Nothing was written.")
    self.used.add(full)
    return np.asarray(self.get_raw(full), np.float32)

  def _hint(self) -> str:
    if any(k.startswith(SCOPE + "/") for k in self.shapes):
      return ""
    scopes = sorted({k.split("/")[0] for k in self.shapes})
    return (f" (its variables are under {', '.join(s + '/' for s in scopes[:4])}: not a "
            f"TF-slim inception_v2 checkpoint)")


def _check_model(m, bn_epsilon: float) -> None:
  """Refuse a configured network TF-slim's inception_v2 has no counterpart for."""
  if m.name != "bn_inception":
    raise TfslimImportError(f"TF-slim inception_v2 imports into model.name='bn_inception', "
                            f"not {m.name!r}.")
  if abs(bn_epsilon - EPSILON) > 1e-12:
    raise TfslimImportError(f"bn.epsilon={bn_epsilon} but TF-slim's inception_v2 normalises "
                            f"with {EPSILON}; set --config.bn.epsilon={EPSILON}.")
  if m.per_activation_bn_last:
    raise TfslimImportError("model.per_activation_bn_last=True has no TF-slim counterpart.")


class _Importer:
  """Our variables ({flat path: array}) filled from a `_Reader`, unit by unit."""

  def __init__(self, read: _Reader, wanted: Mapping[Tuple[str, ...], Any], bn_epsilon: float):
    self.read, self.wanted, self.bn_epsilon = read, wanted, bn_epsilon
    self.out: Dict[Tuple[str, ...], np.ndarray] = {}

  def put(self, path: Tuple[str, ...], value: np.ndarray) -> None:
    if path not in self.wanted:  # our model and this mapping disagree: a bug, not user input
      raise RuntimeError(f"the model has no variable {'/'.join(path)}")
    self.out[path] = value

  def ours(self, row: str, unit: str, *leaf: str) -> Optional[Tuple[str, ...]]:
    return next((p for p in (("params", row, unit) + leaf, ("batch_stats", row, unit) + leaf)
                 if p in self.wanted), None)

  def unit(self, row: str, unit: str, scope: str) -> None:
    """One conv unit: its kernels (and biases where it has no BN), then its BN."""
    read = self.read
    for kind, tf_name in (("conv", "weights"), ("depthwise", "depthwise_weights"),
                          ("pointwise", "pointwise_weights")):
      path = self.ours(row, unit, kind, "kernel")
      if path is None:
        continue
      shape = self.wanted[path].shape
      if kind == "depthwise":
        self.put(path, depthwise_to_flax(read(f"{scope}/{tf_name}", depthwise_tf_shape(shape))))
      else:
        self.put(path, read(f"{scope}/{tf_name}", shape))
      bias_path = self.ours(row, unit, kind, "bias")
      if bias_path is not None:  # no BN on this unit: TF-slim's biases
        self.put(bias_path, read(f"{scope}/biases", self.wanted[bias_path].shape))
    if self.ours(row, unit, "bn", "mean") is not None:
      self.batch_norm(row, unit, scope)

  def batch_norm(self, row: str, unit: str, scope: str) -> None:
    read, features = self.read, self.wanted[self.ours(row, unit, "bn", "mean")].shape
    if read.has(f"{scope}/BatchNorm/moving_mean"):
      beta = read(f"{scope}/BatchNorm/beta", features)
      mean = read(f"{scope}/BatchNorm/moving_mean", features)
      var = read(f"{scope}/BatchNorm/moving_variance", features)
      gamma = (read(f"{scope}/BatchNorm/gamma", features)
               if read.has(f"{scope}/BatchNorm/gamma") else np.ones(features, np.float32))
    elif read.has(f"{scope}/biases"):  # conv1: fold its bias into our BN (module docstring)
      beta = read(f"{scope}/biases", features)
      mean = np.zeros(features, np.float32)
      var = np.full(features, folded_variance(self.bn_epsilon), np.float32)
      gamma = np.ones(features, np.float32)
    else:
      read(f"{scope}/BatchNorm/moving_mean", features)  # raises, naming it
    for leaf, value in (("bias", beta), ("mean", mean), ("var", var)):
      self.put(self.ours(row, unit, "bn", leaf), value)
    if self.ours(row, unit, "bn", "scale") is not None:
      self.put(self.ours(row, unit, "bn", "scale"), gamma)
    elif not np.all(gamma == 1):
      raise TfslimImportError(f"{read.where} has {SCOPE}/{scope}/BatchNorm/gamma; import it "
                              "with model.bn_scale=True.")

  def classifier(self, shapes: Mapping[str, Sequence[int]]) -> None:
    """TF-slim class i + 1 -> our label i (background dropped), or a checkpoint trained
    without background copied as it is."""
    kernel = self.wanted[("params", "logits", "kernel")].shape
    stored = tuple(shapes.get(f"{SCOPE}/{LOGITS}/weights", ()))
    offset = BACKGROUND_CLASSES
    if len(stored) == 4 and stored[-1] - kernel[1] in (0, BACKGROUND_CLASSES):
      offset = stored[-1] - kernel[1]
    w = self.read(f"{LOGITS}/weights", (1, 1, kernel[0], kernel[1] + offset))
    self.put(("params", "logits", "kernel"), w[0, 0, :, offset:])
    self.put(("params", "logits", "bias"),
             self.read(f"{LOGITS}/biases", (kernel[1] + offset,))[offset:])


def import_variables(get: Callable[[str], np.ndarray], shapes: Mapping[str, Sequence[int]],
                     model_config, bn_epsilon: float, abstract_variables: Mapping,
                     where: str = "the checkpoint") -> Dict[str, dict]:
  """TF-slim inception_v2 variables -> {'params', 'batch_stats'} of the configured model.

  `get(name)` returns a checkpoint variable, `shapes` maps every name to its shape
  (tf.train.load_checkpoint's reader gives both); `abstract_variables` are the
  model's variables (jax.eval_shape of model.init), whose tree the result has.
  """
  from flax import traverse_util
  m = model_config
  _check_model(m, bn_epsilon)
  read = _Reader(get, shapes, where)
  importer = _Importer(read, traverse_util.flatten_dict(
      {k: v for k, v in abstract_variables.items() if k in ("params", "batch_stats")}),
      bn_epsilon)
  for (row, unit), scope in unit_scopes(figure5_table(m.pool_projection_4cd,
                                                      m.first_conv)).items():
    importer.unit(row, unit, scope)
  importer.classifier(shapes)
  missing = sorted("/".join(p) for p in set(importer.wanted) - set(importer.out))
  if missing:
    raise RuntimeError(f"no TF-slim variable mapped to {missing[:5]}")
  unused = sorted(k for k in shapes if k.startswith(SCOPE + "/") and k not in read.used
                  and not k.endswith(OPTIMIZER_SLOTS))
  if unused:
    raise TfslimImportError(f"{where} has {unused[0]}" + (f" and {len(unused) - 1} more "
                            "variables" if len(unused) > 1 else "") + ", which TF-slim's "
                            "inception_v2 (as configured) does not: another architecture? "
                            "Nothing was written.")
  return traverse_util.unflatten_dict(importer.out)


def depthwise_tf_shape(flax_shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
  """flax [k, k, 1, in * multiplier] -> TF's depthwise_weights [k, k, in, multiplier]."""
  k1, k2, _, total = flax_shape
  return (k1, k2, total // DEPTH_MULTIPLIER, DEPTH_MULTIPLIER)


def depthwise_to_flax(w: np.ndarray) -> np.ndarray:
  """TF depthwise_weights [k, k, in, multiplier] -> flax grouped-conv kernel [k, k, 1,
  in * multiplier]: output channel c * multiplier + j is input channel c's j-th
  filter, both in tf.nn.depthwise_conv2d and in a conv with feature_group_count=in."""
  k1, k2, cin, mult = w.shape
  return w.reshape(k1, k2, 1, cin * mult)


def read_checkpoint(path: str) -> Tuple[Callable[[str], np.ndarray], Dict[str, Tuple[int, ...]]]:
  """(get, shapes) of a TF checkpoint (prefix such as `inception_v2.ckpt`), via TF's reader."""
  import tensorflow as tf
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as e:
    raise TfslimImportError(f"{path} is not a readable TensorFlow checkpoint "
                            f"({str(e).splitlines()[0][:200]}). Nothing was written.") from None
  shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
  return reader.get_tensor, shapes


def import_checkpoint(path: str, workdir: str, config) -> dict:
  """Write `workdir` (config.json + a step-0 checkpoint) holding TF-slim's weights.

  The checkpoint is the TrainState training writes (fresh optimizer state, CRCs
  in its record), so scripts/evaluate.py and scripts/train.py (resume, or
  `train.init_from` for fine-tuning) take the workdir as it is. Everything is
  checked before anything is written. Returns a summary for the log.
  """
  import jax
  import jax.numpy as jnp
  from bn_inception import checkpoint as ckpt_lib
  from bn_inception import models, optim, train, workdir_config
  from bn_inception.workdir import finished_steps
  from bn_inception.workdir_lock import workdir_lock

  workdir_config.check_or_save_config(workdir, config, save=False)
  if finished_steps(workdir):
    raise TfslimImportError(f"{workdir} already holds checkpoints; import into a new "
                            "--workdir. Nothing was written.")
  model = models.create_model(config)
  size = config.model.image_size
  # The optimizer only shapes the (fresh) optimizer state; the epoch length that
  # `optim.decay_epochs` needs does not change it.
  tx, _ = optim.create_optimizer(config.optim, config.train.num_steps, steps_per_epoch=1.0,
                                 decay_exempt=models.weight_decay_exempt(config))

  dummy = jnp.zeros((1, size, size, 3), jnp.float32)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, train=False))
  get, shapes = read_checkpoint(path)
  variables = import_variables(get, shapes, config.model, config.bn.epsilon, abstract,
                               where=path)
  # As arrays throughout (the step too), like the state a training run saves.
  state = jax.tree.map(jnp.asarray, train.train_state_of(model, tx, variables))
  offset = shapes[f"{SCOPE}/{LOGITS}/weights"][-1] - config.model.num_classes
  meta = ckpt_lib.record(step=0, seed=config.seed, batch_size=config.train.batch_size,
                         nonfinite_steps=0, num_devices=1,
                         imported_from=os.path.abspath(path), label_offset=int(offset))
  with workdir_lock(workdir):
    workdir_config.check_or_save_config(workdir, config)
    checkpointer = ckpt_lib.Checkpointer(workdir, every_steps=1, keep=None, owner=True)
    try:
      checkpointer.save(0, state, meta, force=True)
      checkpointer.wait()
    finally:
      checkpointer.close()
  folded = config.model.first_conv_bn and not any(
      k.startswith(f"{SCOPE}/{STEM[('conv1', 'conv')]}/BatchNorm/") for k in shapes)
  return {"variables": len(jax.tree.leaves(variables)), "label_offset": int(offset),
          "conv1_bias_folded": bool(folded),
          "gamma_set_to_one": bool(config.model.bn_scale) and not any(
              k.endswith("/BatchNorm/gamma") for k in shapes)}
