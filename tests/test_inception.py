"""BN-Inception / Inception baseline (Figure 5): shapes, counts, variants, a train step.

224 px checks are abstract (jax.eval_shape); real computation runs at 32 px, batch 2-4.
"""

import math

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from bn_inception import config_checks, models
from bn_inception.models import figure5
from bn_inception.models import inception as inc
from configs import bn_inception as bn_inception_config

# Figure 5's output sizes at 224x224 (pool projection 96 in 4c/4d, as in TF-slim).
FIGURE5_SHAPES = {
    "conv1": (112, 112, 64), "pool1": (56, 56, 64), "conv2": (56, 56, 192),
    "pool2": (28, 28, 192), "inception_3a": (28, 28, 256), "inception_3b": (28, 28, 320),
    "inception_3c": (14, 14, 576), "inception_4a": (14, 14, 576),
    "inception_4b": (14, 14, 576), "inception_4c": (14, 14, 576),
    "inception_4d": (14, 14, 576), "inception_4e": (7, 7, 1024),
    "inception_5a": (7, 7, 1024), "inception_5b": (7, 7, 1024), "pool5": (1, 1, 1024),
    "logits": (1000,),
}
DOCUMENTED_PARAMS = 11_188_288     # BN-Inception, 224 px, 1000 classes (module docstring)
DOCUMENTED_MACS = 1_934_857_216


def make_config(variant="bn_inception", **model_fields):
  c = bn_inception_config.get_config(variant)
  c.model.update(model_fields)
  return c


def abstract_run(config, size, batch=1, train=False, capture=None):
  """(variables, logits, intermediates) shapes/dtypes of init + one apply, no compute."""
  model = models.create_model(config)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def run(x):
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           x, train=False)
    mutable = [inc.INTERMEDIATES] + (["batch_stats"] if train and config.bn.enabled else [])
    logits, state = model.apply(variables, x, train=train, mutable=mutable,
                                capture_intermediates=capture or False,
                                rngs={"dropout": jax.random.key(2)})
    return variables, logits, state
  return jax.eval_shape(run, x)


def numpy_variables(abstract, seed=0):
  """Concrete variables for abstract ones without flax's (slow-to-compile) initialisers:
  He-normal kernels, zero biases, unit BN scales, batch_stats mean 0 / var 1."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(0, math.sqrt(2 / fan_in), leaf.shape), leaf.dtype)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def n_params(tree):
  return sum(math.prod(l.shape) for l in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def bn_inception_224():
  return abstract_run(make_config(), 224)


def test_every_row_has_figure5_output_size(bn_inception_224):
  _, logits, state = bn_inception_224
  rows = state[inc.INTERMEDIATES][inc.ROW_OUTPUTS]
  assert [row.name for row in inc.figure5_table()] == list(FIGURE5_SHAPES)
  assert set(rows) == set(FIGURE5_SHAPES)
  for name, shape in FIGURE5_SHAPES.items():
    assert rows[name].shape[1:] == shape, name
  assert logits.shape == (1, 1000) and logits.dtype == jnp.float32


def test_printed_pool_projection_128_gives_608_channels_in_4c_4d():
  _, _, state = abstract_run(make_config(pool_projection_4cd=128), 224)
  rows = state[inc.INTERMEDIATES][inc.ROW_OUTPUTS]
  assert rows["inception_4c"].shape[1:] == (14, 14, 160 + 160 + 160 + 128)
  assert rows["inception_4d"].shape[1:] == (14, 14, 96 + 192 + 192 + 128)
  assert rows["inception_4e"].shape[1:] == (7, 7, 192 + 256 + 608)  # 608 passed through
  assert rows["inception_5a"].shape[1:] == (7, 7, 1024)


def test_parameter_count_is_the_documented_one(bn_inception_224):
  variables, _, _ = bn_inception_224
  n = n_params(variables["params"])
  assert n == DOCUMENTED_PARAMS
  assert abs(n - 11.2e6) / 11.2e6 < 0.03  # the TF-slim-sized network, ~11.2M
  costs = inc.model_costs(make_config())
  assert sum(r.params for r in costs) == n
  assert sum(r.macs for r in costs) == DOCUMENTED_MACS
  # model_summary cross-checks every row's shape and parameters against flax.
  assert [r.params for r in inc.model_summary(make_config())] == [r.params for r in costs]


def test_known_convolutions_multiply_adds_by_hand():
  # conv2's 3x3: 56*56 outputs, each 3*3*64 inputs for each of 192 filters.
  shape, params, macs = figure5.conv_cost(56, 56, 64, figure5.ConvSpec("conv", 3, 192), bn=True)
  assert shape == (56, 56, 192) and macs == 56 * 56 * 3 * 3 * 64 * 192 == 346_816_512
  assert params == 3 * 3 * 64 * 192 + 2 * 192
  # The separable 7x7/2 first conv: depthwise 7x7 (3 -> 24), pointwise 24 -> 64 at
  # 112x112: 2,712 weights and 34.0 M multiply-adds (GoogLeNet's table: 2.7K, 34M).
  _, params, macs = figure5.conv_cost(224, 224, 3, figure5.ConvSpec("conv", 7, 64, 2, 8), bn=False)
  assert params == 7 * 7 * 24 + 24 * 64 + 64 == 2_776
  assert macs == 112 * 112 * (7 * 7 * 24 + 24 * 64) == 34_019_328
  _, _, macs = figure5.conv_cost(224, 224, 3, figure5.ConvSpec("conv", 7, 64, 2), bn=False)
  assert macs == 112 * 112 * 7 * 7 * 3 * 64


@pytest.mark.parametrize("size,first_conv", [(224, "separable"), (37, "plain")])
def test_analytic_multiply_adds_equal_a_recount_from_the_model(size, first_conv):
  """Sum over every nn.Conv/nn.Dense of the model: outputs x kernel fan-in."""
  config = make_config(first_conv=first_conv)
  capture = lambda mdl, _: isinstance(mdl, (nn.Conv, nn.Dense))
  variables, _, state = abstract_run(config, size, capture=capture)
  kernels = {tuple(k.key for k in path[:-1]): leaf for path, leaf in
             jax.tree_util.tree_flatten_with_path(variables["params"])[0]
             if path[-1].key == "kernel"}
  outputs = {tuple(k.key for k in path[:-2]): leaf for path, leaf in
             jax.tree_util.tree_flatten_with_path(state[inc.INTERMEDIATES])[0]
             if path[-2].key == "__call__"}
  assert set(kernels) == set(outputs) and len(kernels) > 60
  recount = sum(math.prod(outputs[p].shape[1:-1]) * math.prod(k.shape) for p, k in kernels.items())
  config.model.image_size = size
  assert recount == sum(r.macs for r in inc.model_costs(config))


def test_stride2_modules_have_no_1x1_branch_and_no_pool_projection(bn_inception_224):
  variables, _, _ = bn_inception_224
  capture = lambda mdl, _: isinstance(mdl, nn.Conv)
  _, _, state = abstract_run(make_config(), 224, capture=capture)
  convs = state[inc.INTERMEDIATES]
  for name, size_in in (("inception_3c", 28), ("inception_4e", 14)):
    assert set(variables["params"][name]) == {
        "3x3_reduce", "3x3", "double3x3_reduce", "double3x3_a", "double3x3_b"}
    out = lambda unit: convs[name][unit]["conv"]["__call__"][0].shape[1]
    assert out("3x3_reduce") == out("double3x3_a") == size_in
    assert out("3x3") == out("double3x3_b") == size_in // 2  # the last convs have stride 2
  assert "1x1" in variables["params"]["inception_4a"]
  assert "pool_proj" in variables["params"]["inception_5b"]


def test_bn_off_baseline_has_biases_and_no_batch_stats():
  variables, _, _ = abstract_run(make_config("inception"), 224)
  assert set(variables) == {"params"}
  unit = variables["params"]["inception_3a"]["3x3"]
  assert set(unit) == {"conv"} and set(unit["conv"]) == {"kernel", "bias"}
  on, _, _ = abstract_run(make_config(), 224)
  assert set(on["params"]["inception_3a"]["3x3"]) == {"conv", "bn"}
  assert set(on["params"]["inception_3a"]["3x3"]["conv"]) == {"kernel"}  # beta replaces it
  assert on["batch_stats"]["inception_3a"]["3x3"]["bn"]["mean"].shape == (64,)


def test_per_activation_bn_in_the_last_module():
  variables, _, _ = abstract_run(make_config(per_activation_bn_last=True), 64)
  stats = variables["batch_stats"]
  # 64 px: 5b works on a 2x2 grid; statistics per (h, w, c) there, per channel elsewhere.
  assert stats["inception_5b"]["1x1"]["bn"]["mean"].shape == (2 * 2 * 352,)
  assert variables["params"]["inception_5b"]["pool_proj"]["bn"]["scale"].shape == (2 * 2 * 128,)
  assert stats["inception_5a"]["1x1"]["bn"]["mean"].shape == (352,)
  config = make_config(per_activation_bn_last=True, image_size=64)
  assert n_params(variables["params"]) == sum(r.params for r in inc.model_costs(config))
  with pytest.raises(config_checks.ConfigError,
                     match=r"config.model.per_activation_bn_last=True needs BN \(bn.enabled=True\)"):
    config_checks.validate(make_config("inception", per_activation_bn_last=True))


def test_bfloat16_computes_in_bf16_and_keeps_params_and_stats_float32():
  config = make_config(dtype="bfloat16", num_classes=10)
  model = models.create_model(config)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  abstract = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x,
                                                 train=False), x)

  def train_step(variables, x):
    def loss_fn(params):
      logits, state = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats", inc.INTERMEDIATES])
      return jnp.mean(jnp.square(logits)), (logits, state)
    grads, (logits, state) = jax.grad(loss_fn, has_aux=True)(variables["params"])
    params = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
    return params, state["batch_stats"], logits, state[inc.INTERMEDIATES][inc.ROW_OUTPUTS]

  params, stats, logits, rows = jax.eval_shape(train_step, abstract, x)
  assert {l.dtype for l in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
  assert {l.dtype for l in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert {l.dtype for l in jax.tree.leaves(stats)} == {jnp.dtype(jnp.float32)}
  assert logits.dtype == jnp.float32
  assert rows["inception_4b"].dtype == jnp.bfloat16 and rows["conv1"].dtype == jnp.bfloat16


def test_train_step_at_32px_updates_every_parameter_and_bn_statistic():
  config = make_config(num_classes=10)
  model = models.create_model(config)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jnp.array([0, 3, 7, 9])
  variables = numpy_variables(jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, x, train=False)))

  @jax.jit
  def step(variables):
    def loss_fn(params):
      logits, state = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats"])
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
      return loss, state["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    return loss, grads, stats

  loss, grads, stats = step(variables)
  assert np.isfinite(loss) and abs(loss - math.log(10)) < 3.0
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)
  old = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]
  for (path, before), after in zip(old, jax.tree.leaves(stats)):
    assert not np.allclose(before, after), jax.tree_util.keystr(path)  # moved towards the batch
    assert after.dtype == jnp.float32


def _unit_outputs(config, x, train=True):
  model = models.create_model(config)
  variables = numpy_variables(jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, x, train=False)))
  capture = lambda mdl, _: isinstance(mdl, inc.ConvUnit)
  mutable = [inc.INTERMEDIATES] + (["batch_stats"] if config.bn.enabled else [])
  _, state = jax.jit(lambda v: model.apply(v, x, train=train, mutable=mutable,
                                           capture_intermediates=capture))(variables)
  inter = state[inc.INTERMEDIATES]
  units = [l for p, l in jax.tree_util.tree_flatten_with_path(inter)[0]
           if p[-2].key == "__call__"]
  return units, inter[inc.ROW_OUTPUTS]


def test_sigmoid_variant_squashes_every_unit_into_0_1():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  units, _ = _unit_outputs(make_config(activation="sigmoid", num_classes=10), x)
  # conv1 1 + conv2 2 + eight 7-unit modules + two 5-unit stride-2 modules
  assert len(units) == 1 + 2 + 8 * 7 + 2 * 5
  for u in units:
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
  values = np.concatenate([np.ravel(u) for u in units])
  assert values.std() > 0.1  # BN keeps the inputs spread, not saturated
  relu, _ = _unit_outputs(make_config(num_classes=10), x)
  assert all(float(u.min()) == 0.0 for u in relu)


def test_local_response_norm_matches_the_formula():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 7)).astype(np.float32) * 3
  r, bias, alpha, beta = 2, 1.0, 0.5, 0.75
  expected = np.empty_like(x)
  for d in range(7):
    s = np.sum(np.square(x[..., max(0, d - r):d + r + 1]), axis=-1)
    expected[..., d] = x[..., d] / (bias + alpha * s) ** beta
  np.testing.assert_allclose(inc.local_response_norm(x, r, bias, alpha, beta), expected,
                             rtol=1e-5)


def test_baseline_applies_lrn_after_pool1_and_conv2():
  config = make_config("inception", num_classes=10, lrn_alpha=0.5)  # strong, to be visible
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  _, rows = _unit_outputs(config, x, train=False)
  m = config.model
  lrn = lambda y: inc.local_response_norm(y, m.lrn_depth_radius, m.lrn_bias, m.lrn_alpha,
                                          m.lrn_beta)
  pooled = inc.pool(rows["conv1"], "max", 3, 2)
  np.testing.assert_allclose(rows["pool1"], lrn(pooled), rtol=1e-5, atol=1e-6)
  assert not np.allclose(rows["pool1"], pooled, rtol=1e-2)
  np.testing.assert_allclose(rows["pool2"], inc.pool(rows["conv2"], "max", 3, 2))


def test_dropout_only_in_training():
  config = make_config("inception", num_classes=10)
  model = models.create_model(config)
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  variables = numpy_variables(jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, x, train=False)))
  apply = jax.jit(lambda rng, train: model.apply(variables, x, train=train,
                                                 rngs={"dropout": rng}), static_argnums=1)
  a, b = apply(jax.random.key(0), True), apply(jax.random.key(1), True)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(apply(jax.random.key(0), False), apply(jax.random.key(1), False))


def test_init_scale_multiplies_the_initial_weights():
  spec = figure5.ConvSpec("conv", 3, 256)
  x = jnp.zeros((1, 8, 8, 128))
  kernel = lambda s: inc.ConvUnit(spec, init_scale=s).init(
      jax.random.key(0), x, train=False)["params"]["conv"]["kernel"]
  k1, k3 = kernel(1.0), kernel(3.0)
  np.testing.assert_allclose(k3, 3.0 * k1, rtol=1e-5)
  assert abs(float(k1.std()) / math.sqrt(2 / (3 * 3 * 128)) - 1) < 0.05  # He, fan-in


@pytest.mark.parametrize("field,value", [
    ("activation", "tanh"), ("dtype", "float16"), ("pool_projection_4cd", 64),
    ("first_conv", "dilated"), ("dropout_rate", 1.0), ("init_scale", 0.0)])
def test_bad_fields_are_refused_with_the_field_name(field, value):
  """Checked by the one validator, before anything is built (one line per field)."""
  with pytest.raises(config_checks.ConfigError, match=f"config.model.{field}={value!r}"):
    config_checks.validate(make_config(**{field: value}))


@pytest.mark.slow
def test_trainer_runs_bn_inception_on_mnist(tmp_path):
  from bn_inception import train
  config = make_config("mnist_smoke")
  config.train.num_steps = 4
  config.train.eval_every = 4
  config.train.checkpoint_every = 4
  config.train.log_every = 2
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["eval/num_examples"] == 10_000
  assert 0.0 <= result["eval/accuracy"] <= 1.0
