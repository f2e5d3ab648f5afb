"""The one training loop on real MNIST: learning, exact evaluation, bit-exact resume."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bn_inception import checkpoint as ckpt_lib
from bn_inception import workdir as workdir_lib
from bn_inception import workdir_config
from bn_inception import train
from bn_inception.data import DataError, create_source
from bn_inception.data.base import EpochSampler, eval_positions, padded
from bn_inception.data.synthetic import SyntheticSource
from configs import mnist_fig1


def small_config(variant="bn", **train_fields):
  c = mnist_fig1.get_config(variant)
  c.model.hidden_units = (32, 32, 32)
  c.train.num_steps = 200
  c.bn.momentum = 0.9  # moving averages that forget the init within 200 steps
  c.train.eval_every = 100
  c.train.log_every = 50
  c.train.checkpoint_every = 50
  c.train.eval_batch_size = 384  # does not divide 10,000
  c.train.update(train_fields)
  return c


@pytest.fixture(scope="module")
def mnist():
  return create_source(mnist_fig1.get_config().data)


def test_mnist_files_are_the_real_ones(mnist):
  assert mnist.num_train_examples == 60_000 and mnist.num_eval_examples == 10_000
  np.testing.assert_array_equal(np.bincount(mnist.train_labels),
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  assert abs(mnist.train_images.mean() / 255 - 0.1307) < 1e-3


def test_loss_falls_and_eval_counts_every_example(tmp_path, mnist):
  result = train.train_and_evaluate(small_config(), str(tmp_path), source=mnist)
  assert result["eval/num_examples"] == 10_000
  assert result["eval/accuracy"] > 0.7  # from ~0.1 at step 0
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < 0.5 * losses[0]
  at_start = [r for r in rows if r["step"] == 0][0]
  assert at_start["eval/num_examples"] == 10_000 and at_start["eval/accuracy"] < 0.3
  assert json.load(open(tmp_path / "config.json"))["train"]["batch_size"] == 60


def test_eval_is_exact_against_numpy(mnist):
  """Masked, padded evaluation equals a plain NumPy pass over all 10,000 examples,
  and so do the percentiles of what the model records (Fig. 1(b, c)), at the
  percentiles the config asks for."""
  config = small_config("no_bn")
  config.evals.probe.percentiles = (10, 50, 97)
  trainer = train.Trainer(config, source=mnist)
  state = trainer.init_state()
  result = trainer.evaluate(state)
  logits = trainer.model.apply({"params": state.params},
                               mnist.normalize(mnist.eval_images), train=False)
  expected = float(np.mean(np.argmax(np.asarray(logits), -1) == mnist.eval_labels))
  assert result["eval/num_examples"] == 10_000
  assert abs(result["eval/accuracy"] - expected) < 1e-6
  # The input to unit probe_unit=0 of the last hidden sigmoid, layer by layer in NumPy.
  h = np.asarray(mnist.normalize(mnist.eval_images), np.float64).reshape(10_000, -1)
  for i in range(3):
    p = state.params[f"dense{i}"]
    h = h @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)
    if i < 2:
      h = 1 / (1 + np.exp(-h))
  probe = {k: v for k, v in result.items() if k.startswith("eval/probe/")}
  assert sorted(probe) == [f"eval/probe/last_hidden_input/p{q}" for q in (10, 50, 97)]
  for q in (10, 50, 97):
    np.testing.assert_allclose(probe[f"eval/probe/last_hidden_input/p{q}"],
                               np.percentile(h[:, 0], q), rtol=1e-4, atol=1e-6)


def _final_params(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
    restored = mngr.restore(mngr.latest_step(),
                            args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored["state"]


def test_resume_is_bit_for_bit(tmp_path, mnist):
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  train.train_and_evaluate(small_config(), straight, source=mnist)
  train.train_and_evaluate(small_config(num_steps=100), split, source=mnist)
  assert ocp.CheckpointManager(os.path.join(split, "checkpoints")).latest_step() == 100
  train.train_and_evaluate(small_config(), split, source=mnist)
  a, b = _final_params(straight), _final_params(split)
  assert int(a["step"]) == int(b["step"]) == 200
  for key in ("params", "batch_stats", "opt_state"):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a[key], b[key])


def test_sampler_visits_each_example_once_per_epoch():
  sampler = EpochSampler(num_examples=50, seed=3)
  stream = np.concatenate([sampler.indices(s, 7) for s in range(14)])  # 98 positions
  np.testing.assert_array_equal(np.sort(stream[:50]), np.arange(50))
  assert len(set(stream[50:98])) == 48
  np.testing.assert_array_equal(EpochSampler(50, 3).indices(9, 7), sampler.indices(9, 7))
  assert not np.array_equal(EpochSampler(50, 4).indices(0, 7), sampler.indices(0, 7))


def test_eval_order_pads_the_last_batch_and_slices_it_per_process():
  # 10 examples, global batches of 4 on 2 processes: process p holds rows 2p, 2p+1 of
  # each batch; positions 10 and 11 are padding (position 0, masked).
  positions, mask = eval_positions(10, 4, 0, 2)
  np.testing.assert_array_equal(positions, [[0, 1], [4, 5], [8, 9]])
  assert mask.all()
  positions, mask = eval_positions(10, 4, 1, 2)
  np.testing.assert_array_equal(positions, [[2, 3], [6, 7], [0, 0]])
  np.testing.assert_array_equal(mask, [[True, True], [True, True], [False, False]])
  positions, mask = eval_positions(5, 4, num_batches=3)  # further batches: all padding
  np.testing.assert_array_equal(positions, [[0, 1, 2, 3], [4, 0, 0, 0], [0, 0, 0, 0]])
  assert mask.sum() == 5 and mask[1, 0] and not mask[1, 1:].any() and not mask[2].any()
  assert eval_positions(0, 4)[0].shape == (0, 4)
  batch = padded({"label": np.array([7, 8], np.int32), "image": np.ones((2, 2, 2), np.uint8)},
                 np.array([True, True, False]))
  np.testing.assert_array_equal(batch["label"], [7, 8, 0])
  assert batch["label"].dtype == np.int32 and batch["image"].dtype == np.uint8
  assert batch["image"][:2].all() and not batch["image"][2].any()
  np.testing.assert_array_equal(batch["mask"], [True, True, False])


def test_in_memory_and_synthetic_eval_follow_the_eval_order(mnist):
  for source in (mnist, SyntheticSource((2, 2, 1), 3, num_eval_examples=10)):
    n = source.num_eval_examples
    whole = list(source.eval_batches(384))  # 384 does not divide 10,000
    halves = [list(source.eval_batches(384, p, 2)) for p in (0, 1)]
    for k, batch in enumerate(whole):  # two processes: the same rows, split in halves
      for field in ("image", "label", "mask"):
        np.testing.assert_array_equal(
            batch[field], np.concatenate([halves[0][k][field], halves[1][k][field]]))
    mask = np.concatenate([b["mask"] for b in whole])
    assert len(mask) == -(-n // 384) * 384 and mask[:n].all() and not mask[n:].any()
  labels = np.concatenate([b["label"] for b in list(mnist.eval_batches(384))])
  np.testing.assert_array_equal(labels[:10_000], mnist.eval_labels)  # in file order


def test_workdir_with_another_run_is_refused(tmp_path, mnist):
  train.train_and_evaluate(small_config(num_steps=10), str(tmp_path), source=mnist)
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  other = small_config(num_steps=10)
  other.model.hidden_units = (16, 16, 16)
  with pytest.raises(workdir_lib.WorkdirConfigError, match="model.hidden_units"):
    train.train_and_evaluate(other, str(tmp_path), source=mnist)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_missing_and_malformed_mnist_name_the_path(tmp_path):
  config = mnist_fig1.get_config().data
  config.data_dir = str(tmp_path)
  config.download_if_missing = False
  with pytest.raises(DataError, match=str(tmp_path)):
    create_source(config)
  import gzip
  for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"):
    with gzip.open(tmp_path / f"{stem}.gz", "wb") as f:
      f.write(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(10))
  with pytest.raises(DataError, match="truncated or malformed"):
    create_source(config)


def test_population_statistics_replace_moving_averages(mnist):
  trainer = train.Trainer(small_config(), source=mnist)
  state = trainer.init_state()
  new = trainer.population_statistics(state, num_batches=3)
  batches = [b for _, b in zip(range(3), trainer.train_batches(0))]
  x = np.concatenate([np.asarray(mnist.normalize(b["image"])).reshape(60, -1) for b in batches])
  h = x.reshape(3, 60, -1) @ np.asarray(state.params["dense0"]["kernel"])
  expected_mean = h.mean(1).mean(0)
  expected_var = (h.var(1) * 60 / 59).mean(0)
  np.testing.assert_allclose(new.batch_stats["bn0"]["mean"], expected_mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new.batch_stats["bn0"]["var"], expected_var, rtol=1e-4)


def test_a_path_that_cannot_be_a_workdir_is_refused_before_loading(tmp_path):
  from bn_inception import checkpoint as ckpt_lib
  (tmp_path / "file").write_text("x")
  with pytest.raises(workdir_lib.WorkdirConfigError, match="is a file, not a folder"):
    workdir_lib.check_workdir(str(tmp_path / "file"))
  with pytest.raises(workdir_lib.WorkdirConfigError, match=r"cannot be created: .*file is a file"):
    workdir_lib.check_workdir(str(tmp_path / "file" / "run"))
  workdir_lib.check_workdir(str(tmp_path / "new" / "run"))  # creatable: fine, nothing made
  assert not (tmp_path / "new").exists()


def test_a_launch_that_saved_no_checkpoint_does_not_refuse_its_retry(tmp_path, caplog):
  from bn_inception import checkpoint as ckpt_lib
  config = mnist_fig1.get_config()
  workdir_config.check_or_save_config(str(tmp_path), config)  # then the launch failed
  config.train.batch_size = 30
  workdir_config.check_or_save_config(str(tmp_path), config)
  assert "saved no checkpoint; replacing it" in caplog.text
  assert json.loads((tmp_path / "config.json").read_text())["train"]["batch_size"] == 30
  (tmp_path / "checkpoints" / "100").mkdir(parents=True)  # now a run exists
  config.train.batch_size = 60
  with pytest.raises(workdir_lib.WorkdirConfigError, match="train.batch_size: 30 in the workdir"):
    workdir_config.check_or_save_config(str(tmp_path), config)
