"""The paper's ImageNet run configs (Sec. 4.2): settings as stated, and their CPU variants train."""

import importlib
import os

import jax
import numpy as np
import pytest

from bn_inception import train

RUNS = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")


def load(run, variant="full"):
  return importlib.import_module(f"configs.{run}").get_config(variant)


def test_paper_settings():
  c = {run: load(run) for run in RUNS}
  # Learning rates: Inception 0.0015, x5 and x30 that (Sec. 4.2.2).
  assert c["inception"].optim.learning_rate == c["bn_baseline"].optim.learning_rate == 0.0015
  assert c["bn_x5"].optim.learning_rate == pytest.approx(5 * 0.0015)
  assert c["bn_x30"].optim.learning_rate == pytest.approx(30 * 0.0015)
  assert c["bn_x5_sigmoid"].optim.learning_rate == pytest.approx(5 * 0.0015)
  for run in RUNS:
    cfg = c[run]
    assert cfg.train.batch_size == 32 and cfg.bn.stats_mode == "per_device"
    assert cfg.optim.momentum == 0.9 and cfg.optim.schedule == "exponential"
    assert cfg.data.name == "imagenet_tfds" and cfg.data.image_size == 224
    accelerated = run.startswith("bn_x")
    # Sec. 4.2.1: no dropout, L2 / 5, decay 6x faster, no LRN, within-shard shuffling,
    # fewer distortions -- for the accelerated nets only.
    assert cfg.model.dropout_rate == (0.0 if accelerated else 0.4)
    assert cfg.model.lrn == (not accelerated)
    ref = c["inception"]
    ratio_wd = ref.optim.weight_decay / cfg.optim.weight_decay
    ratio_decay = ref.optim.decay_epochs / cfg.optim.decay_epochs
    assert ratio_wd == pytest.approx(5.0 if accelerated else 1.0)
    assert ratio_decay == pytest.approx(6.0 if accelerated else 1.0)
    assert (cfg.data.shuffle_buffer > 1) == accelerated
    assert (cfg.data.distortion_strength < ref.data.distortion_strength) == accelerated
  assert not c["inception"].bn.enabled and all(c[r].bn.enabled for r in RUNS[1:])
  assert c["bn_x5_sigmoid"].model.activation == "sigmoid"
  assert all(c[r].model.activation == "relu" for r in RUNS[:-1])
  with pytest.raises(ValueError, match="cpu"):
    load("bn_x5", "gpu")


# One recipe in the default run (the others share the builder, loop and data path and
# differ only in values the config tests above check); every recipe with -m slow.
@pytest.mark.parametrize("run", [r if r == "bn_x30" else pytest.param(r, marks=pytest.mark.slow)
                                 for r in RUNS])
def test_cpu_variant_trains_two_steps(run):
  config = load(run, "cpu")
  config.train.batch_size = 8
  trainer = train.Trainer(config)
  assert trainer.source.image_shape == (32, 32, 3)
  state = trainer.init_state()
  before = jax.tree.map(np.asarray, state.params)
  batches = trainer.train_batches(0)
  for _ in range(2):
    state, metrics = trainer.train_step(state, next(batches))
  assert int(state.step) == 2 and int(state.nonfinite_steps) == 0
  assert np.isfinite(float(metrics.compute()["loss"]))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, state.params)
  assert all(jax.tree.leaves(changed))
  assert bool(state.batch_stats) == config.bn.enabled


@pytest.mark.slow
def test_bn_x30_cpu_overfits_32_sample_images(tmp_path):
  """The real path learns: 32 ImageNet sample images (32 classes) memorised to >= 90%."""
  src = os.path.join(os.path.dirname(os.path.dirname(__file__)), "..", "shared", "data",
                     "imagenet_sample")
  root = tmp_path / "images"
  root.mkdir()
  for synset in sorted(os.listdir(src))[:32]:
    os.symlink(os.path.abspath(os.path.join(src, synset)), root / synset)
  c = load("bn_x30", "cpu")
  c.data.train_dir = str(root)
  c.model.num_classes = 32
  c.data.distortion_strength = 0.0
  c.data.random_flip = False
  c.data.crop_area_range = (0.5, 1.0)
  c.data.eval_crop_fraction = 1.0
  c.train.num_steps = 80
  c.train.eval_every = 80
  c.train.eval_batch_size = 32
  result = train.train_and_evaluate(c, str(tmp_path / "workdir"))
  assert result["eval/num_examples"] == 32
  assert result["eval/accuracy"] >= 0.9
