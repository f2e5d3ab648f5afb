"""Export (scripts/export.py, bn_inception/export): each format round-trips and checks itself.

Every artefact is loaded here the way its users load it (plain `jax.export`,
TensorFlow's SavedModel loader, onnxruntime), never through bn_inception, and its
outputs are compared with the network applied by hand from the restored variables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from bn_inception import cli, export, train
from bn_inception.workdir import CheckpointError
from bn_inception.export import formats, onnx_graph
from test_evaluate import _flip_a_byte, _mnist_config  # noqa: E402  (tests/ is on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = 0.1307, 0.3081  # not the default (0, 1): the normalisation must be inside


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """test_evaluate's 20-step MLP (BN statistics far from their start), trained once
  for the module with a normalisation other than the default (0, 1) and
  checkpoints at steps 10 and 20."""
  config = _mnist_config()
  config.data.mean, config.data.std = (MEAN,), (STD,)
  config.train.checkpoint_every = 10
  path = str(tmp_path_factory.mktemp("export") / "mlp")
  train.train_and_evaluate(config, path)
  return path


@pytest.fixture(scope="module")
def network(workdir):
  return export.restore(workdir)


def _by_hand(network, images):
  """The reference: the MLP applied to (x/255 - mean)/std with BN in inference mode."""
  x = (np.asarray(images, np.float32) / 255.0 - MEAN) / STD
  logits = np.asarray(network.model.apply(network.variables, x, train=False))
  return logits, np.asarray(jax.nn.softmax(logits, axis=-1))


def _load_and_run(fmt, folder, images):
  """As a user without this package would."""
  if fmt == "stablehlo":
    with open(os.path.join(folder, "model.jax_exported"), "rb") as f:
      out = jax.export.deserialize(bytearray(f.read())).call(images)
    return np.asarray(out["logits"]), np.asarray(out["probabilities"])
  if fmt == "savedmodel":
    import tensorflow as tf
    serve = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures[
        "serving_default"]
    out = serve(images=tf.constant(images))
    return out["logits"].numpy(), out["probabilities"].numpy()
  import onnxruntime
  session = onnxruntime.InferenceSession(os.path.join(folder, "model.onnx"),
                                         providers=["CPUExecutionProvider"])
  logits, probabilities = session.run(["logits", "probabilities"], {"images": images})
  return logits, probabilities


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_round_trip(fmt, workdir, network, tmp_path):
  output = str(tmp_path / fmt)
  meta = export.export(workdir, fmt, output, network=network)
  assert sorted(os.listdir(tmp_path)) == [fmt]  # no temporary folder left beside it
  assert json.load(open(os.path.join(output, "export.json"))) == meta
  assert meta["source"]["step"] == 20 and meta["source"]["workdir"] == workdir
  # The CRC32 record is the checkpoint's own (written by training) for these arrays.
  stored = json.load(open(os.path.join(workdir, "checkpoints", "20", "meta", "metadata")))
  assert meta["source"]["checksums_crc32"] == {
      k: v for k, v in stored["checksums"].items() if k.startswith(("params/", "batch_stats/"))}
  assert meta["input"]["shape"] == [None, 28, 28, 1] and meta["input"]["dtype"] == "uint8"
  assert meta["normalisation"]["mean"] == [MEAN] and meta["normalisation"]["std"] == [STD]
  assert meta["classes"]["names"] == [str(i) for i in range(10)]
  assert meta["agreement_with_jax"]["top5_identical"] == "8/8"
  # Independent images, at batch sizes other than the check's (the batch is free).
  rng = np.random.default_rng(1)
  for n in (3, 1):
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    logits, probabilities = _load_and_run(fmt, output, images)
    want_logits, want_probabilities = _by_hand(network, images)
    assert logits.shape == (n, 10)
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-5 * np.abs(want_logits).max())
    np.testing.assert_allclose(probabilities, want_probabilities, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-logits)[:, :5], np.argsort(-want_logits)[:, :5])


def test_normalisation_and_bn_statistics_matter(network):
  """Negative control for the comparison above: the reference moves when the
  normalisation or BN's stored statistics are not applied."""
  images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  logits, _ = _by_hand(network, images)
  raw = np.asarray(network.model.apply(network.variables, images / 255.0, train=False))
  assert np.abs(raw - logits).max() > 1e-2
  fresh = dict(network.variables, batch_stats={
      layer: {"mean": np.zeros_like(s["mean"]), "var": np.ones_like(s["var"])}
      for layer, s in network.variables["batch_stats"].items()})
  moved = np.asarray(network.model.apply(fresh, (images / 255.0 - MEAN) / STD, train=False))
  assert np.abs(moved - logits).max() > 1e-2


def test_bf16_run_exports_in_float32_unless_asked(workdir, tmp_path):
  bf16 = str(tmp_path / "bf16")
  shutil.copytree(workdir, bf16)
  path = os.path.join(bf16, "config.json")
  saved = json.load(open(path))
  saved["model"]["dtype"] = "bfloat16"  # as trained in bf16 (params are float32 either way)
  json.dump(saved, open(path, "w"))
  images = np.zeros((2, 28, 28, 1), np.uint8)
  for asked, computes_in_bf16 in (("float32", False), ("bfloat16", True)):
    network = export.restore(bf16, asked)
    jaxpr = str(jax.make_jaxpr(export.inference_fn(network))(network.variables, images))
    assert ("bf16" in jaxpr) == computes_in_bf16
  meta = export.export(bf16, "stablehlo", str(tmp_path / "out"), dtype="bfloat16",
                       network=network)
  assert meta["compute_dtype"] == "bfloat16" and meta["config"]["model"]["dtype"] == "bfloat16"
  assert meta["agreement_with_jax"]["tolerance"] == 1e-2


def test_a_mismatch_is_an_error_and_leaves_nothing(workdir, network, tmp_path, monkeypatch):
  def wrong(fn, variables, spec, directory):
    shifted = jax.tree.map(lambda x: x * 1.001, variables)  # a converter that is slightly off
    formats.write_stablehlo(fn, shifted, spec, directory)
  monkeypatch.setitem(formats.WRITE, "stablehlo", wrong)
  with pytest.raises(export.ExportError, match="disagrees with the JAX model: relative error"):
    export.export(workdir, "stablehlo", str(tmp_path / "out"), network=network)
  assert os.listdir(tmp_path) == []


def test_agreement_refuses_nan_and_a_changed_top5():
  logits = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
  want = {"logits": logits, "probabilities": np.asarray(jax.nn.softmax(logits))}
  assert export.agreement(want, want, "float32")["top5_identical"] == "1/1"
  nan = dict(want, logits=logits * np.nan)
  with pytest.raises(export.ExportError, match="relative error nan"):
    export.agreement(nan, want, "float32")
  swapped = dict(want, logits=logits[:, [0, 1, 2, 3, 5, 4, 6]])  # ranks 5 and 6 swapped
  with pytest.raises(export.ExportError, match="top-5 identical on 0/1"):
    export.agreement(swapped, want, "bfloat16")


def test_overwrite_replaces_only_after_success(workdir, network, tmp_path):
  output = tmp_path / "out"
  output.mkdir()
  (output / "old.txt").write_text("keep me")
  with pytest.raises(export.ExportError, match="exists; give --overwrite"):
    export.export(workdir, "onnx", str(output), network=network)
  assert os.listdir(output) == ["old.txt"]
  export.export(workdir, "onnx", str(output), overwrite=True, network=network)
  assert sorted(os.listdir(output)) == ["export.json", "model.onnx"]
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_missing_converter_is_one_error(monkeypatch, tmp_path):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "onnxruntime" else real(name, *a))
  with pytest.raises(export.ExportError, match=r"--format=onnx needs onnxruntime, not "
                     r"installed here: pip install -e '\.\[export\]'"):
    export.export("unused", "onnx", str(tmp_path / "out"))
  assert os.listdir(tmp_path) == []


def test_damaged_checkpoint_is_refused(workdir, tmp_path):
  """The restore is evaluation's verified one: flipped bytes are an error, not numbers."""
  rotten = str(tmp_path / "rotten")
  shutil.copytree(workdir, rotten)
  _flip_a_byte(rotten, 20)
  with pytest.raises(CheckpointError, match=r"step 20 .*unusable .*checksum mismatch"):
    export.export(rotten + "@20", "stablehlo", str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_unsupported_primitive_is_named():
  with pytest.raises(onnx_graph.UnsupportedError, match="'cumsum'"):
    onnx_graph.to_onnx(lambda x: {"y": jax.numpy.cumsum(x, axis=1)}, (4,), np.float32)


def _one_error_line(capsys, fn, *args, **kwargs) -> str:
  """cli.run_main, as scripts/export.py runs the export: exit status 2, one error line."""
  with pytest.raises(SystemExit) as exit_:
    cli.run_main(fn, *args, **kwargs)
  assert exit_.value.code == 2
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1
  return errors[0]


def test_bad_input_is_one_error_line_and_writes_nothing(workdir, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), empty)
  out = str(tmp_path / "out")
  existing = tmp_path / "existing"
  existing.mkdir()
  cases = [
      ((workdir, "tflite", out),
       "error: --format='tflite' is not an export format; known: stablehlo, savedmodel, onnx."),
      ((str(empty), "onnx", out), f"error: {empty} has no checkpoint (no step folders in"),
      ((str(tmp_path / "nowhere"), "onnx", out), f"error: {tmp_path / 'nowhere'} has no "
       "config.json"),
      ((workdir, "onnx", str(existing)),
       f"error: --output={existing} exists; give --overwrite to replace it."),
      ((workdir + "@7", "onnx", out), "error: No checkpoint at step 7 in"),
  ]
  for args, message in cases:
    assert _one_error_line(capsys, export.export, *args).startswith(message)
  assert _one_error_line(capsys, export.export, workdir, "onnx", out, dtype="float16") == (
      "error: --dtype='float16': give one of float32, bfloat16.")
  assert sorted(os.listdir(tmp_path)) == ["empty", "existing"]
  assert os.listdir(existing) == []


def _script(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "export.py"), *args],
                        capture_output=True, text=True, timeout=300)


def test_script_exports_and_reports(workdir, tmp_path):
  out = str(tmp_path / "hlo")
  result = _script("--workdir=" + workdir + "@10", "--format=stablehlo", "--output=" + out)
  assert result.returncode == 0, result.stderr
  assert f"exported {workdir} step 10 as stablehlo (float32) to {out}" in result.stdout
  assert "top-5 identical 8/8" in result.stdout
  assert json.load(open(os.path.join(out, "export.json")))["source"]["step"] == 10
  result = _script("--workdir=" + workdir, "--format=tflite", "--output=" + out)
  assert result.returncode == 2
  assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
      "error: --format='tflite' is not an export format; known: stablehlo, savedmodel, onnx."]


def _tfslim_checkpoint(path: str, images: np.ndarray) -> np.ndarray:
  """A TF-slim inception_v2 checkpoint (1001 classes, 224 px; BN statistics moved
  off (0, 1) so inference-mode BN matters) and TF-slim's own logits on `images`."""
  import tensorflow as tf
  from test_tfslim_import import _tfslim_modules  # TF-slim under TF 2.21
  from tf_slim.ops.arg_scope import arg_scope_func_key
  slim, inception_v2 = _tfslim_modules()
  rng = np.random.default_rng(0)
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(0)
    x = tf.compat.v1.placeholder(tf.float32, [None, 224, 224, 3])
    with slim.arg_scope(inception_v2.inception_v2_arg_scope()) as scope:
      bn = dict(scope[arg_scope_func_key(slim.conv2d)]["normalizer_params"],
                updates_collections=None)
      with slim.arg_scope([slim.conv2d], normalizer_params=bn):
        logits, _ = inception_v2.inception_v2(x, num_classes=1001, is_training=False)
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      for v in tf.compat.v1.global_variables():
        name, value = v.op.name, sess.run(v)
        if name.endswith("moving_mean"):
          value = rng.normal(0.0, 0.2, value.shape)
        elif name.endswith("moving_variance"):
          value = np.exp(rng.uniform(np.log(0.5), np.log(2.0), value.shape))
        elif name.endswith(("beta", "biases")):
          value = rng.normal(0.0, 0.2, value.shape)
        v.load(value.astype(np.float32), sess)
      out = sess.run(logits, {x: images.astype(np.float32) / 255.0 * 2.0 - 1.0})
      tf.compat.v1.train.Saver().save(sess, path)
  return out[:, 1:]  # TF-slim's class i + 1 is our label i


@pytest.mark.slow
def test_bn_inception_224_imported_from_tfslim_exports_to_every_format(tmp_path):
  """The whole path for the reference network: TF-slim checkpoint -> imported
  workdir -> each format, whose own runtime reproduces TF-slim's logits."""
  from bn_inception import tfslim
  from configs import bn_x30
  images = export.sample_images((224, 224, 3), 4, seed=3)
  theirs = _tfslim_checkpoint(str(tmp_path / "inception_v2.ckpt"), images)
  config = bn_x30.get_config()                 # 224 px, 1000 classes, [-1, 1] inputs
  assert tuple(config.data.mean) == tuple(config.data.std) == (0.5, 0.5, 0.5)
  config.model.dtype = "bfloat16"              # as for bf16 training: exported in float32
  workdir = str(tmp_path / "imported")
  tfslim.import_checkpoint(str(tmp_path / "inception_v2.ckpt"), workdir, config)
  network = export.restore(workdir)
  assert network.image_shape == (224, 224, 3) and network.step == 0
  assert network.dtype == "float32"
  for fmt in formats.FORMATS:
    output = str(tmp_path / fmt)
    meta = export.export(workdir, fmt, output, network=network, num_samples=4)
    checked = meta["agreement_with_jax"]
    assert checked["top5_identical"] == "4/4"
    assert max(checked["logits_relative_error"], checked["probabilities_relative_error"]) < 1e-5
    assert "ILSVRC-2012" in meta["classes"]["order"]
    logits, probabilities = _load_and_run(fmt, output, images)
    assert logits.shape == (4, 1000) and np.std(theirs) > 0.1
    assert np.abs(logits - theirs).max() / np.abs(theirs).max() < 1e-5, fmt
    np.testing.assert_array_equal(np.argsort(-logits)[:, :5], np.argsort(-theirs)[:, :5])
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
