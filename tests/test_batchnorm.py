"""The BN transform against NumPy Alg. 1/2, the paper's backprop formulas and flax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_inception.batchnorm import BATCH_MOMENTS, BatchNorm, population_statistics

EPS = 1e-3


def numpy_bn(x, gamma, beta, eps=EPS):
  """Alg. 1 in NumPy: statistics per feature over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  mu = x.mean(axis=axes)
  var = ((x - mu) ** 2).mean(axis=axes)
  xhat = (x - mu) / np.sqrt(var + eps)
  return gamma * xhat + beta, mu, var


def init_bn(x, **kw):
  bn = BatchNorm(epsilon=EPS, **kw)
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  rng = np.random.default_rng(1)
  f = x.shape[-1]
  variables["params"] = {"scale": jnp.asarray(rng.uniform(0.5, 2, f), jnp.float32),
                         "bias": jnp.asarray(rng.normal(size=f), jnp.float32)}
  return bn, variables


SHAPES = [(16, 5), (7, 3), (4, 6, 6, 3), (2, 5, 3, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_numpy_algorithm_1(shape):
  x = np.random.default_rng(0).normal(2.0, 3.0, shape).astype(np.float32)
  bn, v = init_bn(x)
  y, _ = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  expected, _, _ = numpy_bn(x.astype(np.float64), np.asarray(v["params"]["scale"]),
                            np.asarray(v["params"]["bias"]))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_paper_backprop_formulas(shape):
  """Sec. 3: dl/dx, dl/dgamma, dl/dbeta by the chain rule written out in the paper."""
  rng = np.random.default_rng(2)
  x = rng.normal(1.0, 2.0, shape).astype(np.float32)
  dy = rng.normal(size=shape).astype(np.float32)  # dl/dy for l = sum(y * dy)
  bn, v = init_bn(x)

  def loss(params, x):
    y, _ = bn.apply({**v, "params": params}, x, use_running_average=False,
                    mutable=["batch_stats"])
    return jnp.sum(y * dy)

  g_params, g_x = jax.grad(loss, argnums=(0, 1))(v["params"], x)

  x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
  gamma = np.asarray(v["params"]["scale"], np.float64)
  axes = tuple(range(x.ndim - 1))
  m = np.prod([x.shape[a] for a in axes])
  mu = x64.mean(axis=axes)
  var = ((x64 - mu) ** 2).mean(axis=axes)
  xhat = (x64 - mu) / np.sqrt(var + EPS)
  dxhat = dy64 * gamma
  dvar = np.sum(dxhat * (x64 - mu), axis=axes) * -0.5 * (var + EPS) ** -1.5
  dmu = (np.sum(dxhat * -1 / np.sqrt(var + EPS), axis=axes)
         + dvar * np.sum(-2 * (x64 - mu), axis=axes) / m)
  dx = dxhat / np.sqrt(var + EPS) + dvar * 2 * (x64 - mu) / m + dmu / m
  np.testing.assert_allclose(g_x, dx, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(g_params["scale"], np.sum(dy64 * xhat, axis=axes), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(g_params["bias"], np.sum(dy64, axis=axes), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(10, 4), (3, 4, 5, 2)])
@pytest.mark.parametrize("unbiased", [True, False])
def test_inference_is_algorithm_2_affine_transform(shape, unbiased):
  """With momentum 0 the population estimate is the last batch's; m counts B*H*W for convs."""
  rng = np.random.default_rng(3)
  x = rng.normal(1.0, 2.0, shape).astype(np.float32)
  bn, v = init_bn(x, momentum=0.0, unbiased_variance=unbiased)
  _, updated = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  v = {**v, **updated}
  x_test = rng.normal(size=shape).astype(np.float32)
  y = bn.apply(v, x_test, use_running_average=True)

  axes = tuple(range(x.ndim - 1))
  m = np.prod([x.shape[a] for a in axes])
  mean = x.astype(np.float64).mean(axis=axes)
  var = x.astype(np.float64).var(axis=axes) * (m / (m - 1) if unbiased else 1.0)
  gamma = np.asarray(v["params"]["scale"], np.float64)
  beta = np.asarray(v["params"]["bias"], np.float64)
  scale = gamma / np.sqrt(var + EPS)
  expected = scale * x_test + (beta - scale * mean)   # Alg. 2, step 11
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(v["batch_stats"]["var"], var, rtol=1e-5)


def test_moving_average_uses_decay_momentum():
  rng = np.random.default_rng(4)
  bn, v = init_bn(np.zeros((8, 3), np.float32), momentum=0.9)
  ra_mean, ra_var = np.zeros(3), np.ones(3)
  for _ in range(3):
    x = rng.normal(2.0, 3.0, (8, 3)).astype(np.float32)
    _, updated = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    v = {**v, **updated}
    ra_mean = 0.9 * ra_mean + 0.1 * x.mean(0)
    ra_var = 0.9 * ra_var + 0.1 * x.var(0) * 8 / 7
  np.testing.assert_allclose(v["batch_stats"]["mean"], ra_mean, rtol=1e-5)
  np.testing.assert_allclose(v["batch_stats"]["var"], ra_var, rtol=1e-5)


@pytest.mark.parametrize("shape", [(12, 5), (4, 3, 3, 6)])
def test_biased_mode_equals_flax_batchnorm(shape):
  """Where flax's BatchNorm applies (biased variance, whole batch), ours is identical."""
  rng = np.random.default_rng(5)
  ours = BatchNorm(momentum=0.8, epsilon=1e-5, unbiased_variance=False)
  theirs = nn.BatchNorm(momentum=0.8, epsilon=1e-5, use_fast_variance=False)
  x0 = jnp.zeros(shape)
  v_ours = ours.init(jax.random.key(0), x0, use_running_average=False)
  v_theirs = theirs.init(jax.random.key(0), x0, use_running_average=False)
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_theirs)
  for _ in range(3):
    x = rng.normal(3.0, 2.0, shape).astype(np.float32)
    y1, u1 = ours.apply(v_ours, x, use_running_average=False, mutable=["batch_stats"])
    y2, u2 = theirs.apply(v_theirs, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    v_ours, v_theirs = {**v_ours, **u1}, {**v_theirs, **u2}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), v_ours, v_theirs)
  x = rng.normal(size=shape).astype(np.float32)
  np.testing.assert_allclose(ours.apply(v_ours, x, use_running_average=True),
                             theirs.apply(v_theirs, x, use_running_average=True),
                             rtol=1e-5, atol=1e-5)


def test_groups_normalise_each_group_on_its_own():
  rng = np.random.default_rng(6)
  x = rng.normal(1.0, 2.0, (12, 2, 2, 3)).astype(np.float32)
  bn, v = init_bn(x, group_size=4, momentum=0.0)
  y, updated = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  gamma, beta = np.asarray(v["params"]["scale"]), np.asarray(v["params"]["bias"])
  expected = np.concatenate([numpy_bn(x[i:i + 4].astype(np.float64), gamma, beta)[0]
                             for i in range(0, 12, 4)])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # The population estimate is E over groups of the unbiased group variances.
  m = 4 * 2 * 2
  group_vars = [x[i:i + 4].reshape(-1, 3).var(0) * m / (m - 1) for i in range(0, 12, 4)]
  np.testing.assert_allclose(updated["batch_stats"]["var"], np.mean(group_vars, 0), rtol=1e-5)
  with pytest.raises(ValueError, match="groups of 5"):
    BatchNorm(group_size=5).init(jax.random.key(0), x, use_running_average=False)


def test_bf16_compute_keeps_float32_statistics():
  x = np.random.default_rng(7).normal(size=(8, 4)).astype(np.float32)
  bn = BatchNorm(dtype=jnp.bfloat16)
  v = bn.init(jax.random.key(0), x, use_running_average=False)
  y, updated = bn.apply(v, jnp.asarray(x, jnp.bfloat16), use_running_average=False,
                        mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((v["params"], updated)))


class TwoLayer(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Dense(6, use_bias=False)(x)
    x = nn.sigmoid(BatchNorm(use_running_average=not train, name="bn0")(x))
    x = nn.Dense(4, use_bias=False)(x)
    return BatchNorm(use_running_average=not train, name="bn1")(x)


def test_population_statistics_average_k_batches():
  """Alg. 2, step 10: E[x] = E_B[mu_B], Var[x] = m/(m-1) E_B[sigma_B^2], per layer."""
  model = TwoLayer()
  rng = np.random.default_rng(8)
  batches = [rng.normal(size=(10, 5)).astype(np.float32) * (k + 1) for k in range(4)]
  variables = model.init(jax.random.key(0), batches[0], train=False)

  def moments_fn(v, b):
    _, mutated = model.apply(v, b, train=True, mutable=["batch_stats", BATCH_MOMENTS])
    return mutated[BATCH_MOMENTS]

  new_vars, k = population_statistics(moments_fn, variables, batches)
  assert k == 4
  # Independent expectation: each layer's inputs captured in training mode.
  means, vars_ = {"bn0": [], "bn1": []}, {"bn0": [], "bn1": []}
  for b in batches:
    _, state = model.apply(variables, b, train=True, capture_intermediates=True,
                           mutable=["batch_stats", "intermediates"])
    h0 = np.asarray(state["intermediates"]["Dense_0"]["__call__"][0], np.float64)
    h1 = np.asarray(state["intermediates"]["Dense_1"]["__call__"][0], np.float64)
    for name, h in (("bn0", h0), ("bn1", h1)):
      means[name].append(h.mean(0))
      vars_[name].append(h.var(0) * 10 / 9)
  for name in ("bn0", "bn1"):
    np.testing.assert_allclose(new_vars["batch_stats"][name]["mean"],
                               np.mean(means[name], 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_vars["batch_stats"][name]["var"],
                               np.mean(vars_[name], 0), rtol=1e-4)
  assert new_vars["params"] is variables["params"]


def test_mlp_drops_bias_before_bn():
  from configs import mnist_fig1
  from bn_inception import models
  for variant, has_bias in (("bn", False), ("no_bn", True)):
    config = mnist_fig1.get_config(variant)
    v = models.create_model(config).init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)),
                                         train=False)
    for i in range(3):
      assert ("bias" in v["params"][f"dense{i}"]) == has_bias
    assert ("batch_stats" in v) == (not has_bias)
