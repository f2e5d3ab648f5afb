"""Throughput benchmark: train/eval images/s, compile time, FLOPs, MFU, input pipeline.

  python scripts/benchmark.py --config=configs/<name>.py [--batch_size=N] [--steps=N]
      [--windows=N] [--peak_flops=F] [--json=out.json] [--profile_dir=DIR] [--no_input]

--batch_size is the GLOBAL batch. Writes a table to stdout and a JSON file.
"""

import json

from absl import flags
from ml_collections import config_flags

from bn_inception import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch size (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed window.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows (median and spread reported).")
_PEAK = flags.DEFINE_float("peak_flops", 0.0, "Peak FLOP/s per device for MFU (default: "
                           "from a table of common accelerators).")
_JSON = flags.DEFINE_string("json", "benchmark.json", "Where to write the results.")
_PROFILE = flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace here.")
_INPUT = flags.DEFINE_bool("input", True, "Also time the input pipeline alone.")
_INPUT_BATCHES = flags.DEFINE_integer("input_batches", 20, "Batches for the input timing.")
flags.mark_flags_as_required(["config"])


def run():
  import contextlib
  import jax
  from bn_inception import benchmark
  from bn_inception.data import DataError
  config = _CONFIG.value
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
    config.train.eval_batch_size = _BATCH.value
  trace = (jax.profiler.trace(_PROFILE.value) if _PROFILE.value else contextlib.nullcontext())
  with trace:
    result = benchmark.benchmark_steps(config, windows=_WINDOWS.value, steps=_STEPS.value,
                                       peak_flops=_PEAK.value)
  if _INPUT.value:
    try:
      result.update(benchmark.benchmark_input(config, num_batches=_INPUT_BATCHES.value))
      result.update(benchmark.input_verdict(result))
    except DataError as e:  # e.g. a GPU box without the images: keep the step figures
      print(f"input pipeline not timed: {e}")
      result["input_images_per_s"] = None
  print(benchmark.format_table(result))
  with open(_JSON.value, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {_JSON.value}")


if __name__ == "__main__":
  cli.run_app(run)
