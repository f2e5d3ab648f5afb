"""Throughput of the real train/eval steps and of the input pipeline, with MFU.

The train step measured is exactly the one `train_and_evaluate` runs (the same
`Trainer`), fed with synthetic uint8 batches already on device so that the
step alone is timed; the input pipeline is timed separately on the config's
real data source.
"""

from __future__ import annotations

import contextlib
import logging
import itertools
import os
import statistics
import time
from typing import Dict, Optional

import jax

from bn_inception import progress, sharding, train
from bn_inception.data import DataError, create_source
from bn_inception.data.factory import without_files
from bn_inception.data.synthetic import SyntheticSource

# Dense peak FLOP/s per device for the compute dtype (vendor datasheets).
PEAK_FLOPS = {
    ("H100", "bfloat16"): 989e12, ("H100", "float32"): 67e12,
    ("H200", "bfloat16"): 989e12, ("H200", "float32"): 67e12,
    ("A100", "bfloat16"): 312e12, ("A100", "float32"): 19.5e12,
    ("V100", "bfloat16"): 125e12, ("V100", "float32"): 15.7e12,
    ("TPU v4", "bfloat16"): 275e12, ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12, ("TPU v6", "bfloat16"): 918e12,
}


def peak_flops_per_device(dtype: str, override: float = 0.0) -> Optional[float]:
  if override > 0:
    return override
  kind = jax.devices()[0].device_kind
  for (name, dt), value in PEAK_FLOPS.items():
    if name.lower() in kind.lower() and dt == dtype:
      return value
  return None


def _block(tree):
  jax.block_until_ready(tree)
  return tree


def compile_and_count_flops(jitted, *args) -> tuple[float, Optional[float]]:
  """(seconds to lower and compile, FLOPs of one call from XLA's cost analysis)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not report costs
    return seconds, None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return seconds, (float(cost["flops"]) if cost and "flops" in cost else None)


def _peak_memory() -> Optional[int]:
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def time_windows(fn, windows: int, steps: int, desc: str = "timed windows") -> list[float]:
  """Calls per second in each of `windows` windows of `steps` calls."""
  rates = []
  for _ in progress.track(range(windows), desc, windows, "windows"):
    start = time.perf_counter()
    out = None
    for _ in range(steps):
      out = fn()
    _block(out)
    rates.append(steps / (time.perf_counter() - start))
  return rates


def synthetic_like(config) -> SyntheticSource:
  """Random batches shaped like the config's dataset (or its model, if the data is absent)."""
  try:
    real = create_source(config.data)
    shape, classes = real.image_shape, real.num_classes
  except DataError as e:
    logging.warning("%s: %s...; using the model's input shape", type(e).__name__, str(e)[:120])
    shape, classes = _image_shape(config), config.model.num_classes
    real = without_files(config.data, classes)
  return SyntheticSource(shape, classes, mean=config.data.mean, std=config.data.std,
                         like=real)


def benchmark_steps(config, windows: int = 5, steps: int = 10, warmup: int = 2,
                    peak_flops: float = 0.0) -> Dict:
  """Train and eval step throughput of `config` on synthetic batches."""
  mesh = sharding.create_mesh()
  source = synthetic_like(config)
  trainer = train.Trainer(config, mesh=mesh, source=source)
  batch_size = config.train.batch_size
  state = trainer.init_state()
  batch = next(trainer.train_batches(0))
  eval_batch = sharding.global_batch(next(source.eval_batches(config.train.eval_batch_size)),
                                     mesh)

  compile_s, flops = compile_and_count_flops(trainer.train_step, state, batch)
  for _ in range(warmup):
    state, _ = trainer.train_step(state, batch)
  _block(state)

  holder = {"state": state}

  def one_step():
    holder["state"], m = trainer.train_step(holder["state"], batch)
    return m

  with _no_gc():
    train_rates = time_windows(one_step, windows, steps, "train step windows")
  _block(trainer.eval_step(holder["state"], eval_batch))
  eval_rates = time_windows(lambda: trainer.eval_step(holder["state"], eval_batch),
                            max(2, windows // 2), steps, "eval step windows")
  steps_per_s = statistics.median(train_rates)
  dtype = config.model.dtype
  peak = peak_flops_per_device(dtype, peak_flops)
  achieved = flops * steps_per_s if flops else None
  return {
      "device": jax.devices()[0].device_kind, "num_devices": mesh.size,
      "backend": jax.default_backend(), "dtype": dtype,
      "batch_size": batch_size, "image_shape": list(source.image_shape),
      "train_images_per_s": steps_per_s * batch_size,
      "train_images_per_s_min": min(train_rates) * batch_size,
      "train_images_per_s_max": max(train_rates) * batch_size,
      "eval_images_per_s": statistics.median(eval_rates) * config.train.eval_batch_size,
      "compile_s": compile_s,
      "compilations": trainer.train_step._cache_size(),
      "flops_per_step": flops,
      "flops_per_image": flops / batch_size if flops else None,
      "achieved_flops_per_s": achieved,
      "peak_flops_per_s": peak * mesh.size if peak else None,
      "mfu": achieved / (peak * mesh.size) if achieved and peak else None,
      "peak_memory_bytes": _peak_memory(),
  }


def benchmark_input(config, num_batches: int = 20, warmup: int = 2) -> Dict:
  """The input pipeline alone (decode + augmentation), host-local images per second."""
  source = create_source(config.data)
  it = source.train_batches(0, config.train.batch_size, config.seed,
                            jax.process_index(), jax.process_count())
  for batch in itertools.islice(it, warmup):
    pass
  start = time.perf_counter()
  n = 0
  for batch in progress.track(itertools.islice(it, num_batches), "input pipeline batches",
                              num_batches, "batches"):
    n += len(batch["label"])
  seconds = time.perf_counter() - start
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"input_images_per_s": n / seconds, "input_batches": num_batches,
          "input_image_shape": list(batch["image"].shape[1:]), "host_cpus": cpus,
          "input_images_per_s_per_cpu": n / seconds / cpus}


def input_verdict(result: Dict) -> Dict:
  """The input pipeline's bar: at least 2x the train step's rate (docs/performance.md).
  `input_cpus_for_2x` projects, from the per-CPU rate (decoding scales with
  cores), how many host CPUs would deliver that."""
  ratio = result["input_images_per_s"] / result["train_images_per_s"]
  return {"input_to_train_ratio": ratio,
          "input_cpus_for_2x": 2 * result["train_images_per_s"] /
                               result["input_images_per_s_per_cpu"]}


def _image_shape(config):
  """The model's input side; one channel per normalisation mean (MNIST 1, ImageNet 3)."""
  size = config.model.image_size
  return (size, size, len(config.data.mean))


@contextlib.contextmanager
def _no_gc():
  import gc
  gc.disable()
  try:
    yield
  finally:
    gc.enable()


def format_table(result: Dict) -> str:
  rows = [(k, v) for k, v in result.items()]
  width = max(len(k) for k, _ in rows)
  lines = []
  for k, v in rows:
    if isinstance(v, float):
      v = f"{v:.4g}"
    lines.append(f"{k:<{width}}  {v}")
  return "\n".join(lines)
