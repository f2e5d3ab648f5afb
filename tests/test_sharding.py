"""BN statistics across devices and hosts (config.bn.stats_mode) on the data-parallel Mesh.

The multi-device checks run tests/sharding_worker.py in subprocesses that see 8
simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8):
this process may already have started JAX with one. References are 1-device
runs of the same Trainer, plus hand-computed NumPy statistics of the first layer.
"""

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from bn_inception import sharding

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharding_worker.py")
TOL = dict(rtol=1e-5, atol=1e-5)
LAUNCHER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "SLURM_NTASKS", "SLURM_STEP_NODELIST", "OMPI_COMM_WORLD_SIZE",
                 "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
                 "MEGASCALE_COORDINATOR_ADDRESS")


_COMPILATION_CACHE = {}   # one persistent cache for this module's workers: they
                          # compile many of the same programs


@pytest.fixture(scope="module", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  _COMPILATION_CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
  yield
  _COMPILATION_CACHE.clear()


def worker_env(num_devices: int, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}", **extra)
  if "dir" in _COMPILATION_CACHE:
    env.update(JAX_COMPILATION_CACHE_DIR=_COMPILATION_CACHE["dir"],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def run_worker(*args, num_devices: int = 8, timeout: int = 240):
  proc = subprocess.run([sys.executable, WORKER, *map(str, args)], env=worker_env(num_devices),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f"worker {args} failed:\n{proc.stderr[-4000:]}"


def load(directory, name) -> dict:
  with np.load(os.path.join(directory, name)) as f:
    return {k: f[k] for k in f.files}


def assert_trees_close(a: dict, b: dict, prefixes, **tol):
  keys = sorted(k for k in a if k.startswith(prefixes))
  assert keys and keys == sorted(k for k in b if k.startswith(prefixes))
  for k in keys:
    np.testing.assert_allclose(a[k], b[k], err_msg=k, **(tol or TOL))


STATE = ("loss", "losses", "grads", "step1_batch_stats", "params", "batch_stats", "opt_state")


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharding_measure")
  run_worker("measure", out)
  with open(out / "report.json") as f:
    report = json.load(f)
  return out, report


def first_layer_moving_averages(run: dict, group: int, momentum=0.99):
  """NumPy: bn0's moving averages after one step from (0, 1), statistics over `group` examples."""
  x = run["step1_image"].reshape(len(run["step1_image"]), -1).astype(np.float64) / 255.0
  h = x @ run["init_params['dense0']['kernel']"].astype(np.float64)
  hg = h.reshape(-1, group, h.shape[-1])
  mean = hg.mean(axis=1).mean(axis=0)
  var = hg.var(axis=1).mean(axis=0) * group / (group - 1)   # Alg. 2: unbiased
  return (1 - momentum) * mean, momentum + (1 - momentum) * var


def test_global_stats_on_8_devices_equal_one_device_on_the_full_batch(measured):
  out, _ = measured
  eight, one = load(out, "global_8dev.npz"), load(out, "global_1dev.npz")
  assert (int(eight["num_devices"]), int(one["num_devices"])) == (8, 1)
  assert_trees_close(eight, one, ("init_params",), rtol=0, atol=0)
  # loss and gradients of step 1, BN moving averages after it, and after 3 steps
  # (momentum SGD) the parameters, moving averages and optimizer state.
  assert_trees_close(eight, one, STATE)
  mean, var = first_layer_moving_averages(one, group=32)
  np.testing.assert_allclose(eight["step1_batch_stats['bn0']['mean']"], mean, **TOL)
  np.testing.assert_allclose(eight["step1_batch_stats['bn0']['var']"], var, **TOL)


def test_per_device_on_8_devices_equals_groups_of_b_over_8_on_one_device(measured):
  out, report = measured
  per_device, group = load(out, "per_device_8dev.npz"), load(out, "group_1dev.npz")
  assert report["per_device_batch"] == 4
  assert_trees_close(per_device, group, STATE)
  # The moving averages are the mean over the 8 groups of each group's statistics.
  mean, var = first_layer_moving_averages(group, group=4)
  np.testing.assert_allclose(per_device["step1_batch_stats['bn0']['mean']"], mean, **TOL)
  np.testing.assert_allclose(per_device["step1_batch_stats['bn0']['var']"], var, **TOL)


def test_per_device_and_global_are_different_computations(measured):
  """Guards the two tests above: the modes must not collapse into one."""
  out, _ = measured
  per_device, global_ = load(out, "per_device_8dev.npz"), load(out, "global_8dev.npz")
  assert abs(float(per_device["loss"]) - float(global_["loss"])) > 1e-4
  diff = np.abs(per_device["grads['dense0']['kernel']"] - global_["grads['dense0']['kernel']"])
  assert diff.max() > 1e-4


def test_moving_averages_are_replicated_on_every_device(measured):
  out, _ = measured
  for name in ("per_device_8dev.npz", "global_8dev.npz"):
    assert bool(load(out, name)["batch_stats_replicated"]), name


def test_per_device_stats_isolate_devices(measured):
  """Changing device 3's examples leaves device 5's normalised outputs exactly as they were."""
  _, report = measured
  for layer, change in report["per_device"]["isolation"].items():
    assert change["device_b_rows"] == 4
    assert change["device_b_max_change"] == 0.0, layer
    assert change["device_a_max_change"] > 1e-2, layer  # the change did reach device 3


def test_global_stats_couple_devices(measured):
  _, report = measured
  for layer, change in report["global"]["isolation"].items():
    assert change["device_b_max_change"] > 1e-4, layer


def test_per_device_forward_pass_needs_no_cross_device_communication(measured):
  """Compiled HLO: per-device BN is local; global BN all-reduces its moments in every layer."""
  _, report = measured
  per_device, global_ = report["per_device"]["collectives"], report["global"]["collectives"]
  assert sum(per_device["forward"].values()) == 0, per_device["forward"]
  assert global_["forward"]["all-reduce"] >= 2, global_["forward"]   # >= one per BN layer
  # The train step still averages gradients (and the moving averages) over devices.
  assert per_device["train_step"]["all-reduce"] >= 1
  assert global_["train_step"]["all-reduce"] > per_device["train_step"]["all-reduce"]


def test_checkpoint_moves_between_8_devices_and_1(tmp_path):
  """A run checkpointed on 8 devices continues on 1 (and 1 -> 8) as if uninterrupted.

  stats_mode='global' so that the same steps are the same computation on both
  device counts; 'group' would do too. With 'per_device' the BN statistics cover
  B/8 examples on 8 devices but B on 1, so a continuation on another device
  count is a different (equally valid) run, and train_and_evaluate warns.
  Both meshes live in one 8-device process here; the slow test below restores
  in a process that has only the other device count.
  """
  run_worker("checkpoint", tmp_path)
  with open(tmp_path / "legs.json") as f:
    legs = json.load(f)
  assert legs["8to1"] == [{"step": 2, "saved_on_devices": 8}, {"step": 4, "saved_on_devices": 1}]
  assert legs["1to8"] == [{"step": 2, "saved_on_devices": 1}, {"step": 4, "saved_on_devices": 8}]
  reference = load(tmp_path, "ckpt_uninterrupted_1.npz")
  for name in ("ckpt_8to1.npz", "ckpt_1to8.npz"):
    assert_trees_close(load(tmp_path, name), reference, ("params", "batch_stats", "opt_state"))


@pytest.mark.slow
def test_checkpoint_restores_in_a_process_with_another_device_count(tmp_path):
  """As above, but each leg in its own process: 8 devices -> 1 device -> 8 devices."""
  w = tmp_path / "workdirs"
  run_worker("train", "global", tmp_path, f"{w}/a:2", num_devices=8)
  run_worker("train", "global", tmp_path, f"{w}/a:4", f"{w}/b:2", f"{w}/ref:4", num_devices=1)
  run_worker("train", "global", tmp_path, f"{w}/b:4", num_devices=8)
  reference = load(tmp_path, "ref_4.npz")
  for name, devices in (("a_4.npz", 1), ("b_4.npz", 8)):
    run = load(tmp_path, name)
    assert int(run["step"]) == 4 and int(run["num_devices"]) == devices
    assert_trees_close(run, reference, ("params", "batch_stats", "opt_state"))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_4_devices_match_one_device(tmp_path):
  """Multi-host: 2 processes x 4 CPU devices, started by config.distributed='auto' from
  JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID; then a 1-device process
  resumes their checkpoint. Global BN: identical to an uninterrupted 1-device run."""
  w = tmp_path / "workdirs"
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, WORKER, "train", "global", str(tmp_path), f"{w}/multi:2"],
      env={**worker_env(4), "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(i)},
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    errors = [p.communicate(timeout=240)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-4000:]
  multi = load(tmp_path, "multi_2.npz")
  assert (int(multi["process_count"]), int(multi["num_devices"])) == (2, 8)
  with open(w / "multi" / "metrics.jsonl") as f:   # written by process 0 only
    assert [json.loads(line)["step"] for line in f if "train/loss" in line] == [1, 2]

  run_worker("train", "global", tmp_path, f"{w}/multi:4", f"{w}/ref:4", num_devices=1)
  assert_trees_close(load(tmp_path, "multi_4.npz"), load(tmp_path, "ref_4.npz"),
                     ("params", "batch_stats", "opt_state"))


# --- Configuration errors and the multi-host start (no devices needed) -------

MESH8 = types.SimpleNamespace(size=8)   # check_batch/bn_group_size read only .size


def bn(stats_mode, group_size=0):
  return types.SimpleNamespace(stats_mode=stats_mode, group_size=group_size)


def test_group_sizes_per_stats_mode():
  assert sharding.bn_group_size(bn("per_device"), 256, MESH8) == 32   # 32 per replica
  assert sharding.bn_group_size(bn("global"), 256, MESH8) is None
  assert sharding.bn_group_size(bn("group", 32), 256, MESH8) == 32
  assert sharding.bn_group_size(bn("group", 64), 256, MESH8) == 64


def test_global_batch_not_a_multiple_of_devices_suggests_valid_values():
  with pytest.raises(ValueError) as e:
    sharding.check_batch(100, MESH8)
  msg = str(e.value)
  assert "GLOBAL batch" in msg and "96 (12 per device)" in msg and "104 (13 per device)" in msg
  assert "32 examples per replica on 8 devices set it to 256" in msg
  with pytest.raises(ValueError, match=r"try 8 \(1 per device\)"):
    sharding.check_batch(0, MESH8)


def test_bad_group_size_lists_the_divisors():
  """bn.stats_mode and bn.group_size are the validator's (config_checks), before any
  device is touched: the divisors of the global batch are known from the config."""
  from bn_inception import config_checks
  from configs import mnist_fig1
  config = mnist_fig1.get_config("bn")
  config.train.batch_size, config.bn.stats_mode, config.bn.group_size = 32, "group", 5
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.validate(config)
  assert "config.bn.group_size=5 must divide train.batch_size=32; valid: 1, 2, 4, 8, 16, 32" in (
      str(e.value))
  config.bn.group_size = 0
  with pytest.raises(config_checks.ConfigError, match="config.bn.group_size=0"):
    config_checks.validate(config)
  config.bn.stats_mode = "replica"
  with pytest.raises(config_checks.ConfigError, match="known: per_device, global, group"):
    config_checks.validate(config)


@pytest.mark.parametrize("env, launcher", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
    ({"SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2"}, "SLURM"),
    ({"SLURM_STEP_NODELIST": "node1", "SLURM_NTASKS": "1"}, None),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "Cloud TPU slice"),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),
])
def test_multiprocess_launcher_from_environment(env, launcher):
  assert sharding.multiprocess_launcher(env) == launcher


class FakeDistributed:
  def __init__(self, error=None):
    self.calls, self.error = [], error

  def initialize(self, **kwargs):
    self.calls.append(kwargs)
    if self.error:
      raise self.error

  def is_initialized(self):
    return False


@pytest.fixture
def fake_distributed(monkeypatch):
  def make(error=None):
    fake = FakeDistributed(error)
    monkeypatch.setattr(sharding.jax.distributed, "initialize", fake.initialize)
    monkeypatch.setattr(sharding.jax.distributed, "is_initialized", fake.is_initialized)
    return fake
  return make


def cfg(mode):
  import ml_collections
  return ml_collections.ConfigDict({"distributed": mode})


def test_distributed_auto_starts_only_under_a_multiprocess_launcher(fake_distributed):
  fake = fake_distributed()
  assert sharding.maybe_initialize_distributed(cfg("auto"), {}) is False
  assert sharding.maybe_initialize_distributed(cfg("off"), {"OMPI_COMM_WORLD_SIZE": "2"}) is False
  assert fake.calls == []
  slurm = {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2"}
  assert sharding.maybe_initialize_distributed(cfg("auto"), slurm) is True
  assert fake.calls == [{}]   # JAX finds coordinator, count and id itself
  manual = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
  assert sharding.maybe_initialize_distributed(cfg("auto"), manual) is True
  assert fake.calls[-1] == {"num_processes": 2, "process_id": 1}
  assert sharding.maybe_initialize_distributed(cfg("on"), {}) is True
  assert fake.calls[-1] == {}


def test_distributed_errors_are_clear(fake_distributed):
  fake_distributed(ValueError("coordinator_address should be defined."))
  with pytest.raises(ValueError, match="export JAX_COORDINATOR_ADDRESS"):
    sharding.maybe_initialize_distributed(cfg("on"), {})
  fake_distributed(RuntimeError("must be called before any JAX calls"))
  with pytest.raises(ValueError, match="before JAX is first used"):
    sharding.maybe_initialize_distributed(cfg("on"), {})
  fake = fake_distributed()
  with pytest.raises(ValueError, match="Set both JAX_NUM_PROCESSES and JAX_PROCESS_ID"):
    sharding.maybe_initialize_distributed(cfg("auto"), {"JAX_COORDINATOR_ADDRESS": "h:1",
                                                        "JAX_NUM_PROCESSES": "2"})
  assert fake.calls == []


def test_unknown_distributed_mode_is_the_validators():
  from bn_inception import config_checks
  from configs import mnist_fig1
  config = mnist_fig1.get_config("bn")
  config.distributed = "yes"
  with pytest.raises(config_checks.ConfigError,
                     match="config.distributed='yes'; known: auto, on, off"):
    config_checks.validate(config)
