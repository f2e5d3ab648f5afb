"""The three export formats: how each is written, and how its own runtime runs it.

Each format writes an inference function `fn(variables, images) -> {"logits",
"probabilities"}` for uint8 images of shape (batch, H, W, C), batch left free,
into a folder, and runs what it wrote on a numpy batch with the runtime a user
of that format has (plain JAX, TensorFlow, onnxruntime), never with this package.

* stablehlo: `jax.export` serialization (StableHLO + calling convention) with the
  weights inside; `jax.export.deserialize(bytes).call(images)` runs it.
* savedmodel: jax2tf native serialization (an XlaCallModule op, what TF Serving
  runs) with the weights as tf.Variables, signature `serving_default`.
* onnx: our jaxpr -> ONNX translation (onnx_graph.py explains why not a converter).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Callable, Dict

import jax
import numpy as np

FORMATS = ("stablehlo", "savedmodel", "onnx")
FILES = {"stablehlo": "model.jax_exported", "savedmodel": "saved_model", "onnx": "model.onnx"}
# The Python packages a format needs beyond this project's own (`pip install .[export]`).
NEEDS = {"stablehlo": ("jax",), "savedmodel": ("tensorflow",), "onnx": ("onnx", "onnxruntime")}
# Serialized for both, so the artefact runs on a CPU and on an NVIDIA GPU.
PLATFORMS = ("cpu", "cuda")
INPUT_NAME = "images"


class ExportError(ValueError):
  """An export that cannot be made: bad arguments, a missing converter, a mismatch."""


def check_format(fmt: str, dtype: str) -> None:
  """Refuse an unknown format, one whose packages are missing, or bf16 ONNX."""
  if fmt not in FORMATS:
    raise ExportError(f"--format={fmt!r} is not an export format; known: "
                      f"{', '.join(FORMATS)}.")
  missing = [p for p in NEEDS[fmt] if importlib.util.find_spec(p) is None]
  if missing:
    raise ExportError(f"--format={fmt} needs {', '.join(missing)}, not installed here: "
                      "pip install -e '.[export]' (or pip install -r requirements.txt).")
  if fmt == "onnx" and dtype != "float32":
    raise ExportError("--format=onnx exports float32 only (onnxruntime's CPU kernels have "
                      "no bfloat16 convolutions); drop --dtype or use another format.")


def versions(fmt: str) -> Dict[str, str]:
  """The versions of the packages that wrote (and checked) the artefact."""
  return {p: importlib.import_module(p).__version__ for p in dict.fromkeys(("jax",) + NEEDS[fmt])}


# --------------------------------------------------------------------------- stablehlo


def write_stablehlo(fn: Callable, variables, spec, directory: str) -> None:
  exported = jax.export.export(jax.jit(functools.partial(fn, variables)),
                               platforms=PLATFORMS)(spec)
  with open(os.path.join(directory, FILES["stablehlo"]), "wb") as f:
    f.write(exported.serialize())


def run_stablehlo(directory: str, images: np.ndarray) -> Dict[str, np.ndarray]:
  with open(os.path.join(directory, FILES["stablehlo"]), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  return {k: np.asarray(v) for k, v in exported.call(images).items()}


# --------------------------------------------------------------------------- savedmodel


def write_savedmodel(fn: Callable, variables, spec, directory: str) -> None:
  """The jax2tf pattern for serving: weights as tf.Variables, the computation as
  one XlaCallModule op with a symbolic batch dimension."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  weights = tf.nest.map_structure(tf.Variable, jax.device_get(variables))
  converted = jax2tf.convert(fn, polymorphic_shapes=[None, "(b, ...)"], with_gradient=False,
                             native_serialization_platforms=PLATFORMS)
  module = tf.Module()
  module._variables = tf.nest.flatten(weights)
  module.serve = tf.function(
      lambda images: converted(weights, images), autograph=False,
      input_signature=[tf.TensorSpec((None, *spec.shape[1:]), tf.uint8, name=INPUT_NAME)])
  tf.saved_model.save(module, os.path.join(directory, FILES["savedmodel"]),
                      signatures={"serving_default": module.serve})


def run_savedmodel(directory: str, images: np.ndarray) -> Dict[str, np.ndarray]:
  import tensorflow as tf
  loaded = tf.saved_model.load(os.path.join(directory, FILES["savedmodel"]))
  out = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(images)})
  return {k: v.numpy() for k, v in out.items()}


# --------------------------------------------------------------------------- onnx


def write_onnx(fn: Callable, variables, spec, directory: str) -> None:
  import onnx
  from bn_inception.export import onnx_graph
  model = onnx_graph.to_onnx(functools.partial(fn, variables), spec.shape[1:], spec.dtype,
                             INPUT_NAME)
  onnx.save(model, os.path.join(directory, FILES["onnx"]))


def run_onnx(directory: str, images: np.ndarray) -> Dict[str, np.ndarray]:
  import onnxruntime
  session = onnxruntime.InferenceSession(os.path.join(directory, FILES["onnx"]),
                                         providers=["CPUExecutionProvider"])
  names = [o.name for o in session.get_outputs()]
  return dict(zip(names, session.run(names, {INPUT_NAME: images})))


WRITE = {"stablehlo": write_stablehlo, "savedmodel": write_savedmodel, "onnx": write_onnx}
RUN = {"stablehlo": run_stablehlo, "savedmodel": run_savedmodel, "onnx": run_onnx}
