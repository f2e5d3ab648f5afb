"""The CPU twin of the LR experiment: the paper configs' recipes, rescaled (needs configs/<run>.py)."""

import jax
import jax.numpy as jnp
import pytest

from bn_inception import models
from configs import mnist_lr_acceleration as twin

RUNS = twin.RUNS


@pytest.fixture(scope="module")
def configs():
  return {run: twin.get_config(run) for run in RUNS}


def test_twin_keeps_the_paper_recipes(configs):
  ref = configs["inception"]
  assert ref.optim.learning_rate == pytest.approx(0.0015 * twin.LR_SCALE)
  for run, c in configs.items():
    paper = twin.paper_config(run)
    accelerated = run.startswith("bn_x")
    assert c.bn.enabled == (run != "inception") == paper.bn.enabled
    assert c.optim.learning_rate / ref.optim.learning_rate == pytest.approx(
        {"inception": 1, "bn_baseline": 1, "bn_x5": 5, "bn_x30": 30, "bn_x5_sigmoid": 5}[run])
    assert ref.optim.decay_steps / c.optim.decay_steps == (6 if accelerated else 1)
    assert ref.optim.weight_decay / c.optim.weight_decay == pytest.approx(
        5 if accelerated else 1)
    assert (c.model.dropout_rate, c.model.lrn) == ((0.0, False) if accelerated else (0.4, True))
    assert c.model.activation == ("sigmoid" if run == "bn_x5_sigmoid" else "relu")
    assert c.optim.momentum == 0.9 and c.train.batch_size == 32
    assert c.optim.schedule == "exponential" and c.optim.decay_epochs == 0
    # One time scale for all: training lengths are the paper's over TIME_SCALE.
    assert c.train.num_steps == round(paper.train.num_steps / twin.TIME_SCALE)
  assert (ref.optim.decay_steps, configs["bn_x5"].optim.decay_steps) == (30, 5)
  with pytest.raises(ValueError, match="takes one of"):
    twin.get_config("bn_x50")


def test_mini_inception_forward(configs):
  x = jnp.zeros((4, 28, 28, 1))
  for run in ("inception", "bn_x5"):
    model = models.create_model(configs[run], bn_group_size=4)
    v = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)
    n = sum(p.size for p in jax.tree.leaves(v["params"]))
    assert n == {"inception": 82_146, "bn_x5": 82_698}[run]  # as the module docstring says
    assert ("batch_stats" in v) == (run == "bn_x5")
    # BN replaces the conv biases (Sec. 3.2); without BN every conv has one.
    conv = v["params"]["conv1"]["conv"]["conv"]
    assert ("bias" in conv) == (run == "inception")
    assert model.apply(v, x, train=False).shape == (4, 10)


def test_time_scale_argument():
  """`<run>,<time scale>` stretches every length and decay interval by the same factor."""
  default, mild = twin.get_config("bn_x5"), twin.get_config("bn_x5,2500")
  assert twin.parse_arg("bn_x5") == ("bn_x5", twin.TIME_SCALE)
  # 6 M paper steps / 2,500; 8/6 epochs of 40,036 steps of 32 / 2,500 = 21.4.
  assert (mild.train.num_steps, mild.optim.decay_steps) == (2400, 21)
  assert (default.train.num_steps, default.optim.decay_steps) == (562, 5)
  inception = twin.get_config("inception,2500")
  assert (inception.train.num_steps, inception.optim.decay_steps) == (12_400, 128)
  assert mild.optim.learning_rate == default.optim.learning_rate
  for bad in ("bn_x5,0", "bn_x5,fast", "bn_x5,-3"):
    with pytest.raises(ValueError, match="positive whole number"):
      twin.get_config(bad)
