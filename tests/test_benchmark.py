"""The benchmark measures the real step: sane rates, one compilation, FLOPs as counted by hand."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bn_inception import benchmark
from configs import mnist_fig1


def analytic_mlp_train_flops(batch, sizes):
  """2*B*fan_in*fan_out per matmul: forward, weight gradient, and input gradient except layer 1."""
  macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
  return 2 * batch * (2 * sum(macs) + sum(macs[1:]))


def test_benchmark_fields_and_flops():
  config = mnist_fig1.get_config("bn")
  result = benchmark.benchmark_steps(config, windows=2, steps=3)
  assert result["train_images_per_s"] > 0 and result["eval_images_per_s"] > 0
  assert result["train_images_per_s_min"] <= result["train_images_per_s"] <= \
      result["train_images_per_s_max"]
  assert result["compilations"] == 1       # no recompilation between steps
  assert result["compile_s"] > 0
  expected = analytic_mlp_train_flops(60, [784, 100, 100, 100, 10])
  # Matmuls dominate; BN, sigmoid and the softmax add a few percent.
  assert expected <= result["flops_per_step"] <= 1.15 * expected
  assert result["mfu"] is None or 0 < result["mfu"] < 1


def test_benchmark_script_writes_json(tmp_path):
  out = tmp_path / "b.json"
  proc = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--config=configs/mnist_fig1.py",
       "--windows=2", "--steps=2", "--input_batches=3", "--peak_flops=1e12", f"--json={out}"],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  for key in ("train_images_per_s", "eval_images_per_s", "compile_s", "flops_per_step",
              "mfu", "input_images_per_s", "input_to_train_ratio", "compilations"):
    assert key in result, key
  assert 0 < result["mfu"] < 1
  assert result["input_images_per_s"] > 0
  assert result["input_to_train_ratio"] == result["input_images_per_s"] / \
      result["train_images_per_s"]
  per_cpu = result["input_images_per_s"] / result["host_cpus"]
  assert abs(result["input_cpus_for_2x"] - 2 * result["train_images_per_s"] / per_cpu) < 1e-6
  assert "train_images_per_s" in proc.stdout


@pytest.mark.slow  # bf16 in the step is checked fast by the StableHLO test below
def test_bfloat16_keeps_float32_state_and_tracks_float32_loss():
  """Sec. 'fast step': bf16 compute, float32 parameters and BN statistics, same learning."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from bn_inception import train
  from bn_inception.data.synthetic import SyntheticSource
  from configs import bn_x30

  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = bn_x30.get_config("cpu")
    config.model.dtype = dtype
    config.train.batch_size = 8
    source = SyntheticSource((32, 32, 3), 1000, mean=config.data.mean, std=config.data.std)
    trainer = train.Trainer(config, source=source)
    state = trainer.init_state()
    batches = trainer.train_batches(0)
    losses[dtype] = []
    for _ in range(3):
      state, metrics = trainer.train_step(state, next(batches))
      losses[dtype].append(float(metrics.compute()["loss"]))
    leaves = jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
    assert all(x.dtype == jnp.float32 for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))
  # Same initial network: the first loss differs only by bf16 rounding through ~60
  # layers (measured: 1.3%); after two updates at BN-x30's learning rate the runs may
  # drift apart by a few percent more.
  np.testing.assert_allclose(losses["bfloat16"][0], losses["float32"][0], rtol=3e-2)
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=5e-2)
  assert losses["float32"][0] != losses["float32"][2]   # the steps did change the network


def _stablehlo_ops(text, op):
  """(operand/result types) of every `op` in a StableHLO module's text."""
  return [line.rsplit(" : ", 1)[-1] for line in text.splitlines() if f"stablehlo.{op}" in line]


def test_bfloat16_step_runs_every_convolution_in_bfloat16():
  """On a GPU an f32 convolution would run at 1/15 of the bf16 rate: every conv of the
  bf16 train step (forward and both gradients) takes and gives bf16; only the
  float32 classifier (logits for a stable softmax, ~0.05% of the MACs) is f32."""
  from bn_inception import sharding, train
  from configs import bn_x30
  config = bn_x30.get_config("cpu")
  config.model.dtype = "bfloat16"
  trainer = train.Trainer(config, source=benchmark.synthetic_like(config))
  batch = next(trainer.train_batches(0))
  text = trainer.train_step.lower(trainer.init_state(), batch).as_text()
  convs = _stablehlo_ops(text, "convolution")
  # 57 conv layers (Fig. 5 rows' convs); the first has no input gradient.
  assert len(convs) >= 3 * 57 - 1, len(convs)
  assert all("xf32>" not in c and c.count("xbf16>") == 3 for c in convs), \
      [c for c in convs if "xf32>" in c][:3]
  dots = _stablehlo_ops(text, "dot_general")
  assert dots and all("1000xf32>" in d or "x1000x" in d for d in dots), dots


def test_benchmark_times_the_device_augmentation_with_or_without_the_data():
  """Synthetic batches carry the colour seeds the real pipeline sends, so the timed step
  includes the on-device distortion, also where the images are absent (a GPU box)."""
  from configs import bn_x30
  config = bn_x30.get_config("cpu")
  for train_dir in (config.data.train_dir, "/nonexistent/imagenet"):
    config.data.train_dir = train_dir
    source = benchmark.synthetic_like(config)
    batch = next(source.train_batches(0, 4, seed=0))
    assert batch["color_seed"].shape == (4, 2) and batch["color_seed"].dtype == "uint32"
    x = np.asarray(source.train_inputs(batch))
    undistorted = np.asarray(source.normalize(batch["image"]))
    assert x.shape == undistorted.shape and np.abs(x - undistorted).mean() > 0.01


@pytest.mark.slow  # the script itself is covered fast by test_benchmark_script_writes_json
def test_benchmark_script_without_the_images_still_times_the_bf16_step(tmp_path):
  """The GPU command of docs/performance.md on a machine without the JPEGs: step figures
  (synthetic batches), the input part reported as not timed, exit 0."""
  out = tmp_path / "b.json"
  proc = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--config=configs/bn_x30.py:cpu",
       "--config.data.train_dir=/nonexistent/imagenet", "--config.model.dtype=bfloat16",
       "--batch_size=8", "--windows=1", "--steps=1", f"--json={out}"],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["dtype"] == "bfloat16" and result["train_images_per_s"] > 0
  assert result["compilations"] == 1 and result["input_images_per_s"] is None
  assert "input pipeline not timed" in proc.stdout and "/nonexistent/imagenet" in proc.stdout
