"""TF-slim inception_v2 checkpoints: import, equivalence with TF-slim itself, fine-tuning.

The reference is TF-slim's own `nets/inception_v2.py`, built in graph mode with
random weights and random BN moving statistics far from (0, 1), so that
inference-mode BN matters, and run on real sample JPEGs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bn_inception import models, tfslim  # noqa: E402
from bn_inception import workdir as workdir_lib
from bn_inception.data import augment  # noqa: E402
from bn_inception.schema import default_data_root  # noqa: E402
from configs import bn_x30  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(default_data_root(), "imagenet_sample")
SIZE = 64             # small inputs keep TF-slim's build and our forward pass fast
NUM_IMAGES = 12
RTOL = 1e-5           # max |ours - TF-slim| / max |TF-slim| over all logits


def _sample_images():
  """The first NUM_IMAGES sample JPEGs through this project's eval preprocessing
  (central 87.5% crop, bilinear resize), scaled to TF-slim's [-1, 1]."""
  classes = sorted(os.listdir(SAMPLE))[:NUM_IMAGES]
  images = []
  for c in classes:
    name = sorted(os.listdir(os.path.join(SAMPLE, c)))[0]
    data = tf.io.read_file(os.path.join(SAMPLE, c, name))
    images.append(augment.eval_image(data, image_size=SIZE, crop_fraction=0.875).numpy())
  return (np.stack(images).astype(np.float32) / 255.0 - 0.5) / 0.5


def _tfslim_modules():
  """tf_slim 1.1.0 (TF-slim's last release) under TensorFlow 2.21.

  Its fused batch norm checks `isinstance(x, ops.Tensor)`, a name TF 2.21 no
  longer exports: restore that alias. (Its other BN path needs the tf_keras legacy
  layers, which tf-keras 2.21 no longer ships under the module TF 2.21 imports.)"""
  import tf_slim as slim
  from tensorflow.python.framework import ops
  if not hasattr(ops, "Tensor"):
    ops.Tensor = tf.Tensor
  from tf_slim.nets import inception_v2
  return slim, inception_v2


def _randomise(name: str, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  if name.endswith("moving_mean"):
    return rng.normal(0.0, 2.0, value.shape)             # far from 0
  if name.endswith("moving_variance"):
    return np.exp(rng.uniform(np.log(0.05), np.log(20.0), value.shape))  # far from 1
  if name.endswith(("beta", "biases")):
    return rng.normal(0.0, 0.5, value.shape)
  return value                                            # weights: TF-slim's initialisers


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """A TF-slim inception_v2 checkpoint (1001 classes) and its logits on sample JPEGs."""
  slim, inception_v2 = _tfslim_modules()
  from tf_slim.ops.arg_scope import arg_scope_func_key
  images = _sample_images()
  path = str(tmp_path_factory.mktemp("tfslim") / "inception_v2.ckpt")
  rng = np.random.default_rng(0)
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(0)
    x = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 3])
    with slim.arg_scope(inception_v2.inception_v2_arg_scope()) as scope:
      # TF-slim's own BN parameters with updates_collections=None, which selects its
      # fused batch norm (same variables, same inference arithmetic; see above).
      bn = dict(scope[arg_scope_func_key(slim.conv2d)]["normalizer_params"],
                updates_collections=None)
      with slim.arg_scope([slim.conv2d], normalizer_params=bn):
        logits, _ = inception_v2.inception_v2(x, num_classes=1001, is_training=False)
    regularised = [t.op.name for t in tf.compat.v1.losses.get_regularization_losses()]
    variables = tf.compat.v1.global_variables()
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      for v in variables:
        v.load(_randomise(v.op.name, sess.run(v), rng).astype(np.float32), sess)
      out = sess.run(logits, {x: images})
      tf.compat.v1.train.Saver().save(sess, path)
      arrays = {v.op.name: sess.run(v) for v in variables}
    trainable = sum(int(np.prod(v.shape)) for v in tf.compat.v1.trainable_variables())
  return {"path": path, "images": images, "logits": out, "arrays": arrays,
          "regularised": regularised, "trainable": trainable}


def _config(**model):
  c = bn_x30.get_config("cpu")
  c.model.image_size = SIZE
  c.data.image_size = SIZE
  for k, v in model.items():
    c.model[k] = v
  return c


def _imported(config, reference):
  model = models.create_model(config)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)),
                                               train=False))
  arrays = reference["arrays"]
  variables = tfslim.import_variables(arrays.__getitem__, {k: v.shape for k, v in arrays.items()},
                                      config.model, config.bn.epsilon, abstract)
  return model, variables


def _logits(model, variables, images):
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))


def _rel_error(ours, theirs):
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def _assert_same_predictions(ours, reference):
  theirs = reference["logits"][:, 1:]  # TF-slim class i + 1 is our label i
  assert ours.shape == theirs.shape == (NUM_IMAGES, 1000)
  assert np.std(theirs) > 0.1  # the reference is not degenerate
  assert _rel_error(ours, theirs) < RTOL
  top5 = lambda z: np.argsort(-z, axis=1)[:, :5]
  np.testing.assert_array_equal(top5(ours), top5(theirs))


@pytest.mark.parametrize("model_fields", [{}, {"bn_scale": False, "first_conv_bn": False}],
                         ids=["paper_net_folded", "tfslim_net_copied"])
def test_logits_match_tfslim(reference, model_fields):
  model, variables = _imported(_config(**model_fields), reference)
  _assert_same_predictions(_logits(model, variables, reference["images"]), reference)


def test_negative_controls_fail(reference):
  """The comparison above detects a wrong depthwise channel order and a wrong eps."""
  model, variables = _imported(_config(), reference)
  theirs = reference["logits"][:, 1:]
  kernel = variables["params"]["conv1"]["conv"]["depthwise"]["kernel"]  # [7, 7, 1, 3 * 8]
  swapped = np.asarray(kernel).reshape(7, 7, 3, 8).transpose(0, 1, 3, 2).reshape(kernel.shape)
  wrong = jax.tree.map(lambda x: x, variables)
  wrong["params"]["conv1"]["conv"]["depthwise"]["kernel"] = swapped
  assert _rel_error(_logits(model, wrong, reference["images"]), theirs) > 100 * RTOL
  config = _config()
  config.bn.epsilon = 1e-5  # flax's default instead of TF-slim's 1e-3
  model_eps = models.create_model(config)
  assert _rel_error(_logits(model_eps, variables, reference["images"]), theirs) > 10 * RTOL


def test_tfslim_structure_matches_the_mapping(reference):
  """TF-slim's own graph: no gamma, conv1 with biases and neither BN nor L2, and every
  variable has its place in unit_scopes (import_variables refuses unused ones)."""
  names = set(reference["arrays"])
  assert not any(n.endswith("/gamma") for n in names)
  conv1 = {n for n in names if "Conv2d_1a_7x7" in n}
  assert conv1 == {f"InceptionV2/Conv2d_1a_7x7/{v}" for v in
                   ("depthwise_weights", "pointwise_weights", "biases")}
  assert not any("Conv2d_1a_7x7" in r for r in reference["regularised"])
  scopes = tfslim.unit_scopes(tfslim.figure5_table())
  # Hand-checked against nets/inception_v2.py.
  assert scopes[("inception_3a", "pool_proj")] == "Mixed_3b/Branch_3/Conv2d_0b_1x1"
  assert scopes[("inception_3c", "3x3")] == "Mixed_4a/Branch_0/Conv2d_1a_3x3"
  assert scopes[("inception_4e", "double3x3_b")] == "Mixed_5a/Branch_1/Conv2d_1a_3x3"
  assert scopes[("inception_5b", "double3x3_a")] == "Mixed_5c/Branch_2/Conv2d_0b_3x3"
  # Every conv2d of TF-slim's graph is one of our units (conv1 is its separable conv).
  conv2d = {f"InceptionV2/{s}/weights" for u, s in scopes.items() if u != ("conv1", "conv")}
  assert conv2d | {"InceptionV2/Logits/Conv2d_1c_1x1/weights"} == {
      n for n in names if n.endswith("/weights")}
  assert len(reference["regularised"]) == len(conv2d) + 1  # L2: conv2d and the classifier


def test_tfslim_network_config_is_tfslim(reference):
  """model.bn_scale=False, first_conv_bn=False: TF-slim's parameter count (checked row
  by row against flax by model_summary) and its L2 set (all kernels but conv1's)."""
  from bn_inception import optim
  from bn_inception.models import inception as inc
  from flax import traverse_util
  config = _config(bn_scale=False, first_conv_bn=False, num_classes=1001)
  assert sum(r.params for r in inc.model_summary(config)) == reference["trainable"]
  model = models.create_model(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)),
                                             train=False))["params"]
  # The paper's network has one gamma per BN channel more (conv1: gamma + beta for a bias).
  paper = _config(num_classes=1001)
  bn_channels = sum(x.size for x in jax.tree.leaves(jax.eval_shape(
      lambda: models.create_model(paper).init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)),
                                              train=False))["batch_stats"])) // 2
  assert sum(r.params for r in inc.model_summary(paper)) == reference["trainable"] + bn_channels
  mask = traverse_util.flatten_dict(
      optim.weight_decay_mask(params, models.weight_decay_exempt(config)))
  decayed = sorted("/".join(k[:-1]) for k, on in mask.items() if on)
  assert len(decayed) == len(reference["regularised"])
  assert not any(k.startswith("conv1/") for k in decayed) and "conv2/reduce/conv" in decayed


def test_folded_bn_is_the_identity():
  """BN(x) with mean 0, variance v, gamma 1, beta 0 is x exactly in float32 (Alg. 2)."""
  from bn_inception.batchnorm import BatchNorm
  for eps in (1e-3, 1e-5, 0.1):
    v = tfslim.folded_variance(eps)
    assert np.float32(v) + np.float32(eps) == np.float32(1)
    x = jnp.asarray(np.random.default_rng(1).normal(0, 10, (4, 5, 5, 3)), jnp.float32)
    bn = BatchNorm(use_running_average=True, epsilon=eps)
    variables = {"params": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
                 "batch_stats": {"mean": jnp.zeros(3), "var": jnp.full(3, v)}}
    np.testing.assert_array_equal(np.asarray(bn.apply(variables, x)), np.asarray(x))


def test_depthwise_layout_matches_tensorflow():
  """TF's depthwise_weights [k, k, in, m] as our grouped conv gives tf.nn.depthwise_conv2d."""
  rng = np.random.default_rng(2)
  w = rng.normal(size=(7, 7, 3, 8)).astype(np.float32)
  x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  want = tf.nn.depthwise_conv2d(x, w, [1, 2, 2, 1], "SAME").numpy()
  got = jax.lax.conv_general_dilated(
      x, tfslim.depthwise_to_flax(w), (2, 2), "SAME", feature_group_count=3,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ bad checkpoints


def _write_checkpoint(path, arrays):
  graph = tf.Graph()
  with graph.as_default():
    var_list = {n: tf.compat.v1.Variable(a, name=f"v{i}") for i, (n, a) in
                enumerate(arrays.items())}
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      tf.compat.v1.train.Saver(var_list=var_list).save(sess, path)
  return path


def test_import_errors_write_nothing(reference, tmp_path):
  arrays = reference["arrays"]
  cases = {
      # another architecture: everything under another scope
      "other": ({n.replace("InceptionV2", "InceptionV1"): a for n, a in arrays.items()},
                {}, "has no variable InceptionV2/Conv2d_1a_7x7/depthwise_weights"),
      # shape mismatch: TF-slim's 96 pool projection into the printed 128
      "shape": (arrays, {"pool_projection_4cd": 128},
                "InceptionV2/Mixed_4d/Branch_3/Conv2d_0b_1x1/weights"),
      # an extra layer TF-slim's inception_v2 does not have
      "extra": ({**arrays, "InceptionV2/AuxLogits/Conv2d_1b_1x1/weights":
                 np.zeros((1, 1, 576, 128), np.float32)}, {},
                "InceptionV2/AuxLogits/Conv2d_1b_1x1/weights"),
  }
  for name, (variables, fields, message) in cases.items():
    path = arrays is variables and reference["path"] or _write_checkpoint(
        str(tmp_path / f"{name}.ckpt"), variables)
    workdir = tmp_path / f"work_{name}"
    with pytest.raises(tfslim.TfslimImportError, match=message):
      tfslim.import_checkpoint(path, str(workdir), _config(**fields))
    assert not workdir.exists(), name


@pytest.mark.slow
def test_cli_missing_variable_one_error_line(reference, tmp_path):
  missing = "InceptionV2/Mixed_4c/Branch_2/Conv2d_0c_3x3/BatchNorm/moving_variance"
  path = _write_checkpoint(str(tmp_path / "missing.ckpt"),
                           {n: a for n, a in reference["arrays"].items() if n != missing})
  workdir = tmp_path / "work"
  env = {**os.environ, "BN_INCEPTION_DATA": default_data_root()}
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "import_checkpoint.py"),
       f"--tfslim={path}", f"--workdir={workdir}",
       f"--config={os.path.join(REPO, 'configs', 'bn_x30.py')}:cpu"],
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and missing in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


# ------------------------------------------------------------------ workdir, fine-tuning


@pytest.fixture(scope="module")
def imported_workdir(reference, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("imported") / "tfslim_v2")
  config = bn_x30.get_config("cpu")
  summary = tfslim.import_checkpoint(reference["path"], workdir, config)
  assert summary["label_offset"] == 1 and summary["conv1_bias_folded"]
  assert summary["gamma_set_to_one"]
  return workdir, config


def test_imported_workdir_is_a_training_workdir(imported_workdir, reference):
  """config.json + a verified step-0 checkpoint that the evaluator's loader restores,
  giving TF-slim's logits."""
  from bn_inception import ensemble, sharding
  workdir, config = imported_workdir
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["num_classes"] == 1000
  member = ensemble.load_member(ensemble.parse_member(workdir), "tfslim", sharding.create_mesh())
  assert member.step == 0
  uint8 = np.round((reference["images"] * 0.5 + 0.5) * 255).astype(np.uint8)
  # At 32 px (the :cpu config) the logits differ from the 64 px reference; check the
  # restored network against the importer's own variables instead.
  model, variables = _imported(_config(), reference)
  want = jax.nn.softmax(_logits(model, variables, (uint8 / 255.0 - 0.5) / 0.5), axis=-1)
  got = np.asarray(member.predict(jnp.asarray(uint8)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def _ten_class_folder(tmp_path):
  data = tmp_path / "ten"
  data.mkdir()
  for c in sorted(os.listdir(SAMPLE))[:10]:
    os.symlink(os.path.join(SAMPLE, c), data / c)
  return str(data)


@pytest.mark.slow
def test_fine_tune_imported_to_ten_classes(imported_workdir, tmp_path, caplog):
  """BN-x30 (32 px) from the imported TF-slim weights with a fresh 10-way classifier
  learns the 10 sample images."""
  from bn_inception import train
  from bn_inception.workdir import read_metrics
  source, _ = imported_workdir
  config = bn_x30.get_config("cpu")
  config.model.num_classes = 10
  config.data.train_dir = _ten_class_folder(tmp_path)
  config.data.distortion_strength = 0.0
  config.bn.momentum = 0.5  # moving averages that forget the (random) imported ones
  config.train.batch_size = 10
  config.train.eval_batch_size = 10
  config.train.num_steps = 20
  config.train.eval_every = 20
  config.train.log_every = 1
  config.train.checkpoint_every = 20
  config.train.init_from = source
  workdir = str(tmp_path / "finetune")
  caplog.set_level(logging.INFO)
  out = train.train_and_evaluate(config, workdir)
  assert "classifier re-initialised for 10 classes (the source has 1000)" in caplog.text
  rows = read_metrics(workdir)
  assert rows[20]["train/loss"] < 0.5 * rows[1]["train/loss"]
  assert out["eval/accuracy"] >= 0.5  # chance: 0.1


def _tiny(tmp_path, **train):
  from configs import imagenet_tiny
  c = imagenet_tiny.get_config()
  c.train.batch_size = 10
  c.train.eval_every = 0
  c.train.log_every = 1
  c.train.checkpoint_every = 1
  for k, v in train.items():
    c.train[k] = v
  return c


def test_init_from_semantics(tmp_path, caplog):
  """Parameters and BN statistics of the chosen step, a fresh 10-way classifier and
  optimizer at step 0; a rerun resumes its own checkpoint; bad sources are refused."""
  from bn_inception import checkpoint as ckpt_lib
  from bn_inception import finetune, train
  source = str(tmp_path / "source")
  train.train_and_evaluate(_tiny(tmp_path, num_steps=2), source)
  config = _tiny(tmp_path, num_steps=1, init_from=f"{source}@1")
  config.model.num_classes = 10
  config.data.train_dir = _ten_class_folder(tmp_path)
  trainer = train.Trainer(config)
  fresh = trainer.init_state()
  state = finetune.init_from(trainer, fresh, f"{source}@1")
  src_trainer = train.Trainer(_tiny(tmp_path))
  checkpointer = ckpt_lib.Checkpointer(source)
  src, _ = checkpointer.restore(src_trainer.abstract_state, step=1)
  checkpointer.close()
  assert int(state.step) == 0 and int(src.step) == 1
  for name in ("dense0", "bn0"):
    for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(src.params[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(src.batch_stats)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(state.params["logits"]["kernel"]),
                                np.asarray(fresh.params["logits"]["kernel"]))
  assert state.params["logits"]["kernel"].shape == (512, 10)
  for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(fresh.opt_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  newest = finetune.init_from(trainer, fresh, source)  # no @step: the newest (2)
  assert not np.array_equal(np.asarray(newest.params["dense0"]["kernel"]),
                            np.asarray(state.params["dense0"]["kernel"]))
  caplog.set_level(logging.INFO)
  caplog.clear()

  workdir = str(tmp_path / "finetune")
  train.train_and_evaluate(config, workdir)
  assert f"Initialised parameters and BN statistics from {source} step 1" in caplog.text
  caplog.clear()
  config.train.num_steps = 2
  train.train_and_evaluate(config, workdir)  # resumes at step 1: init_from not used again
  assert "Initialised" not in caplog.text

  with pytest.raises(workdir_lib.CheckpointError, match="No checkpoint at step 7"):
    finetune.init_from(trainer, fresh, f"{source}@7")
  with pytest.raises(ValueError, match="holds a 'mlp' model"):
    config_inception = bn_x30.get_config("cpu")
    config_inception.train.init_from = source
    finetune.init_from(train.Trainer(config_inception), None, source)
