"""Export a training workdir's network for inference where JAX is not (issue 27).

`export(workdir, fmt, output)` restores the workdir's variables through the one
verified restore (`checkpoint.Checkpointer.restore_variables`, as evaluation:
every array's shape and CRC32 checked, a damaged checkpoint refused), builds the
inference function of the run's own config and writes it in one of
`formats.FORMATS`:

  uint8 images [batch, H, W, C] at config.model.image_size, batch free
    -> (x/255 - data.mean) / data.std      (the data sources' on-device normalisation)
    -> the network, BN in inference mode with the stored statistics (Alg. 2)
    -> {"logits": float32 [batch, classes], "probabilities": their softmax}

The compute dtype is float32 unless asked (a bf16-trained run exports in float32).
Before it reports success an export runs the artefact in its own runtime on
sample images and compares it with the JAX model (relative error below
TOLERANCE and the same top-5 classes on every image); it is written to a
temporary folder beside `output` and renamed into place only then, with
export.json (source, checksums, config, input, normalisation, classes, the
measured agreement) beside the artefact. A failure leaves nothing at `output`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bn_inception import checkpoint as ckpt_lib
from bn_inception import checkpoint_verify
from bn_inception import workdir as workdir_lib
from bn_inception import workdir_config
from bn_inception.export import formats
from bn_inception.export.formats import FILES, FORMATS, ExportError, check_format

DTYPES = ("float32", "bfloat16")
# Largest relative error (max |export - jax| / max |jax|, per output) accepted.
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}
TOP_K = 5
METADATA = "export.json"

__all__ = ["DTYPES", "FORMATS", "ExportError", "Network", "export", "restore"]


@dataclasses.dataclass
class Network:
  """A restored workdir's network, ready to export."""
  workdir: str
  step: int
  config: ml_collections.ConfigDict   # as trained (config.json)
  dtype: str                          # the compute dtype of the export
  model: object                       # flax module built with `dtype`
  variables: dict                     # {'params', 'batch_stats'?} as numpy arrays
  checksums: Dict[str, str]           # CRC32 per restored array (verified on restore)

  @property
  def image_shape(self):
    """config.model.image_size square, one channel per normalisation mean (MNIST 1, RGB 3)."""
    size = self.config.model.image_size
    return (size, size, len(self.config.data.mean))


def check_dtype(dtype: str) -> None:
  if dtype not in DTYPES:
    raise ExportError(f"--dtype={dtype!r}: give one of {', '.join(DTYPES)}.")


def restore(workdir_text: str, dtype: str = "float32") -> Network:
  """`dir` or `dir@STEP` -> its network with the variables of the newest usable
  checkpoint (or STEP), read and verified by checkpoint.Checkpointer."""
  from bn_inception import models, sharding
  check_dtype(dtype)
  workdir, step = workdir_lib.split_step(workdir_text)
  config = workdir_config.read_config(workdir)
  if not workdir_lib.finished_steps(workdir):
    raise workdir_lib.CheckpointError(
        f"{workdir} has no checkpoint (no step folders in "
        f"{os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)}); train it first.")
  built = copy.deepcopy(config)
  built.model.dtype = dtype
  model = models.create_model(built)
  network = Network(workdir, 0, config, dtype, model, {}, {})
  abstract = jax.eval_shape(lambda: models.init_variables(model, network.image_shape,
                                                          jax.random.key(0)))
  checkpointer = ckpt_lib.Checkpointer(workdir)
  try:
    variables, network.step = checkpointer.restore_variables(
        abstract, sharding.replicated(sharding.create_mesh()), step)
  finally:
    checkpointer.close()
  network.variables = jax.device_get(variables)
  network.checksums = checkpoint_verify.state_checksums(network.variables)
  return network


def inference_fn(network: Network) -> Callable:
  """fn(variables, uint8 images) -> {"logits", "probabilities"} (float32), the
  run's normalisation inside and BN in inference mode."""
  from bn_inception.data.base import DataSource
  normalisation = DataSource()  # the sources' own on-device normalisation
  normalisation.mean = tuple(network.config.data.mean)
  normalisation.std = tuple(network.config.data.std)

  def fn(variables, images):
    logits = network.model.apply(variables, normalisation.normalize(images), train=False)
    logits = logits.astype(jnp.float32)
    return {"logits": logits, "probabilities": jax.nn.softmax(logits, axis=-1)}

  return fn


def sample_images(shape, n: int, seed: int = 0) -> np.ndarray:
  """`n` deterministic uint8 images: smooth random blobs, so the network sees
  image-like inputs and its top classes are well apart."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (n, 4, 4, shape[2]))
  images = jax.image.resize(coarse, (n, *shape), "linear")
  noise = rng.normal(0, 8, (n, *shape))
  return np.clip(np.asarray(images) + noise, 0, 255).astype(np.uint8)


def agreement(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray], dtype: str) -> dict:
  """How far an export's outputs are from JAX's; raises ExportError past TOLERANCE."""
  if set(got) != set(want):
    raise ExportError(f"the export returns {sorted(got)}, the JAX model {sorted(want)}")
  out = {"tolerance": TOLERANCE[dtype]}
  for key in sorted(want):
    g, w = np.asarray(got[key], np.float64), np.asarray(want[key], np.float64)
    if g.shape != w.shape:
      raise ExportError(f"the export's {key} have shape {g.shape}, JAX's {w.shape}")
    out[f"{key}_relative_error"] = float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30))
    out[f"{key}_max_abs_error"] = float(np.max(np.abs(g - w)))
  top = lambda p: np.argsort(-p, axis=-1, kind="stable")[:, :TOP_K]
  same = np.all(top(np.asarray(got["logits"])) == top(np.asarray(want["logits"])), axis=-1)
  out["top5_identical"] = f"{int(same.sum())}/{len(same)}"
  worst = max(out["logits_relative_error"], out["probabilities_relative_error"])
  if not worst < TOLERANCE[dtype] or not same.all():  # NaN is a mismatch too
    raise ExportError(f"the export disagrees with the JAX model: relative error {worst:.3g} "
                      f"(tolerance {TOLERANCE[dtype]:g}), top-5 identical on "
                      f"{out['top5_identical']} sample images. Nothing was written.")
  return out


def class_order(config) -> dict:
  """What output i means: the data source's label order (and names where known)."""
  n, name = config.model.num_classes, config.data.name
  if name == "mnist":
    return {"order": "digit i is class i", "names": [str(i) for i in range(n)]}
  out = {"order": "ILSVRC-2012 synsets (WordNet ids) in sorted order, n01440764 = 0: the "
                  "order of TFDS imagenet2012 and of a <dir>/<synset>/ image folder"}
  root = config.data.train_dir if name == "imagenet_folder" else ""
  if root and os.path.isdir(root):  # the folder the run was trained from
    synsets = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if len(synsets) == n:
      out["names"] = synsets
  return out


def metadata(network: Network, fmt: str, checked: dict) -> dict:
  data = network.config.data
  return {
      "format": fmt, "file": FILES[fmt],
      "source": {"workdir": os.path.abspath(network.workdir), "step": network.step,
                 "checksums_crc32": network.checksums},
      "input": {"name": formats.INPUT_NAME, "shape": [None, *network.image_shape],
                "dtype": "uint8", "values": "0..255",
                "layout": "NHWC, " + ("RGB" if network.image_shape[2] == 3 else "greyscale"),
                "batch": "free (symbolic)"},
      "normalisation": {"formula": "(x / 255 - mean) / std, inside the export",
                        "mean": list(data.mean), "std": list(data.std)},
      "outputs": {"logits": ["batch", network.config.model.num_classes],
                  "probabilities": "softmax of the logits"},
      "compute_dtype": network.dtype, "batchnorm": "inference mode, stored statistics",
      "classes": class_order(network.config),
      "agreement_with_jax": checked, "versions": formats.versions(fmt),
      "config": json.loads(network.config.to_json_best_effort()),
  }


def _verify(fmt: str, directory: str, fn: Callable, network: Network,
            num_samples: int) -> dict:
  """Run the artefact in its own runtime on a batch and on one image; compare with JAX."""
  images = sample_images(network.image_shape, num_samples)
  want = jax.device_get(jax.jit(fn)(network.variables, images))
  got = formats.RUN[fmt](directory, images)
  one = formats.RUN[fmt](directory, images[:1])  # another batch size: the batch is free
  got1 = {k: np.concatenate([one[k], v[1:]]) for k, v in got.items() if k in one}
  checked, single = agreement(got, want, network.dtype), agreement(got1, want, network.dtype)
  checked.update({k: max(v, single[k]) for k, v in checked.items() if k.endswith("_error")})
  checked.update(num_images=num_samples, images="deterministic smooth random images "
                 "(sample_images), batches of %d and 1" % num_samples)
  return checked


def _replace(tmp: str, output: str) -> None:
  """Move the finished export into place, replacing `output` if it exists."""
  old = None
  if os.path.lexists(output):
    old = tmp + "-old"
    os.rename(output, old)
  os.rename(tmp, output)
  if old and os.path.isdir(old):
    shutil.rmtree(old)
  elif old:
    os.remove(old)


def export(workdir: str, fmt: str, output: str, overwrite: bool = False,
           dtype: str = "float32", num_samples: int = 8,
           network: Optional[Network] = None) -> dict:
  """Export `workdir` (`dir` or `dir@STEP`) to `output` (a folder) in format `fmt`;
  the metadata written beside it. `network`: an already restored one to reuse."""
  check_dtype(dtype)
  check_format(fmt, dtype)
  if os.path.lexists(output) and not overwrite:
    raise ExportError(f"--output={output} exists; give --overwrite to replace it.")
  if num_samples < 1:
    raise ExportError(f"num_samples={num_samples} must be positive.")
  if network is None or network.dtype != dtype:
    network = restore(workdir, dtype)
  fn = inference_fn(network)
  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch, *network.image_shape), jnp.uint8)
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output)}.tmp-")
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 -> what a plain mkdir would give
  try:
    formats.WRITE[fmt](fn, network.variables, spec, tmp)
    meta = metadata(network, fmt, _verify(fmt, tmp, fn, network, num_samples))
    with open(os.path.join(tmp, METADATA), "w") as f:
      json.dump(meta, f, indent=1)
    _replace(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta
