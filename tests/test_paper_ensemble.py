"""The paper's six-member BN-x30 ensemble (Sec. 4.2.3): member configs and the CPU twin."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import traverse_util

from bn_inception import models
from bn_inception.sweep_runner import load_sweep, resolve
from configs import bn_x30
from configs.sweeps import paper_ensemble

# The paper's modifications, and each member's own seed (separately trained networks).
DOCUMENTED = {"seed", "model.init_scale", "model.dropout_rate", "model.per_activation_bn_last"}


def flat(config):
  return {".".join(k): v for k, v in traverse_util.flatten_dict(config.to_dict()).items()}


@pytest.mark.parametrize("variant", ["full", "cpu"])
def test_members_differ_from_bn_x30_exactly_in_documented_fields(variant):
  members = load_sweep(f"configs/sweeps/paper_ensemble.py:{variant}")
  assert [m.name for m in members] == list(paper_ensemble.MEMBERS)
  reference = flat(bn_x30.get_config(variant))
  seen = set()
  for member in members:
    config = flat(resolve(member).config)
    differs = {k for k in reference if config[k] != reference[k]}
    expected = set(paper_ensemble.MEMBERS[member.name])
    extra = paper_ensemble.CPU_TWIN if variant == "cpu" else paper_ensemble.FULL
    expected |= {k for k, v in extra.items() if reference[k] != v}
    assert differs == expected, member.name
    assert set(paper_ensemble.MEMBERS[member.name]) <= DOCUMENTED
    seen |= set(paper_ensemble.MEMBERS[member.name])
    assert 0 < config["model.dropout_rate"] <= 0.1 or config["model.dropout_rate"] == 0
  assert seen == DOCUMENTED  # every modification of the paper is used
  seeds = [flat(resolve(m).config)["seed"] for m in members]
  assert len(set(seeds)) == len(members) and reference["seed"] not in seeds


def twin_bn_x30():
  from configs import mnist_lr_acceleration
  return mnist_lr_acceleration.get_config("bn_x30")


def cpu_bn_x30_at_64px():
  config = bn_x30.get_config("cpu")
  config.model.image_size = 64
  return config


# Per-activation BN in the last Inception module only: BN-Inception at 64 px, module 5b
# sees 2 x 2 x C activations, so 4 C statistics per BN layer, not C; the twin's reduced
# table at 28 px, its last module 4a sees 4 x 4 x C. Both modules have seven BN layers.
@pytest.mark.parametrize("make_config, last_module, cells", [
    (cpu_bn_x30_at_64px, "inception_5b", 4), (twin_bn_x30, "inception_4a", 16)])
def test_per_activation_bn_keeps_per_unit_statistics(make_config, last_module, cells):
  def stat_shapes(per_activation):
    config = make_config()
    config.model.per_activation_bn_last = per_activation
    model = models.create_model(config)
    size, channels = config.model.image_size, 1 if config.data.name == "mnist" else 3
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((2, size, size, channels)), train=False))
    return {k: v.shape for k, v in traverse_util.flatten_dict(shapes["batch_stats"]).items()}
  per_map, per_unit = stat_shapes(False), stat_shapes(True)
  assert per_map.keys() == per_unit.keys()
  in_last = [k for k in per_map if k[0] == last_module]
  assert len(in_last) == 2 * 7          # mean and var of the module's seven BN layers
  for path, shape in per_map.items():
    expected = (cells * shape[0],) if path in in_last else shape
    assert per_unit[path] == expected, path

@pytest.mark.slow
def test_cpu_twin_trains_and_evaluates_as_an_ensemble(tmp_path):
  workdir, out = tmp_path / "ensemble", tmp_path / "eval"
  run = lambda args: subprocess.run([sys.executable] + args, capture_output=True, text=True,
                                    timeout=1500)
  proc = run(["scripts/sweep.py", "--sweep=configs/sweeps/paper_ensemble.py:cpu",
              f"--workdir={workdir}"])
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  proc = run(["scripts/evaluate.py", f"--workdirs={workdir}/x30_*", "--crops=1,144",
              "--batch_size=144", "--paper", f"--output_dir={out}"])
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  assert len(report["members"]) == 6 and report["num_examples"] == 10
  for result in report["results"]:
    ensemble = [r for r in result["rows"] if r["models"] == 6]
    assert len(ensemble) == 1 and ensemble[0]["examples"] == 10
    assert len(result["rows"]) == 7   # six members and the ensemble
  assert "paper: BN-Inception ensemble" in (out / "report.md").read_text()
