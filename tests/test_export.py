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

from bn_inception import export, models, train
from bn_inception.checkpoint import CheckpointError
from bn_inception.export import formats, onnx_graph
from configs import mnist_fig1

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = 0.1307, 0.3081  # not the default (0, 1): the normalisation must be inside


def _config():
  c = mnist_fig1.get_config()
  c.model.hidden_units = (32, 32)
  c.bn.momentum = 0.5  # moving statistics far from their (0, 1) start after 20 steps
  c.data.mean, c.data.std = (MEAN,), (STD,)
  c.train.num_steps = 20
  c.train.eval_every = 0
  c.train.eval_at_start = False
  c.train.log_every = 10
  c.train.checkpoint_every = 10
  return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("mnist") / "mlp")
  train.train_and_evaluate(_config(), path)
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


def test_a_mismatch_is_an_error_and_leaves_nothing(workdir, network, tmp_path, monkeypatch):
  def wrong(fn, variables, spec, directory):
    shifted = jax.tree.map(lambda x: x * 1.001, variables)  # a converter that is slightly off
    formats.write_stablehlo(fn, shifted, spec, directory)
  monkeypatch.setitem(formats.WRITE, "stablehlo", wrong)
  with pytest.raises(export.ExportError, match="disagrees with the JAX model: relative error"):
    export.export(workdir, "stablehlo", str(tmp_path / "out"), network=network)
  assert os.listdir(tmp_path) == []


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
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(rotten, "checkpoints", "20"))
           for f in fs if os.sep + "d" + os.sep in os.path.join(d, f)]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.seek(os.path.getsize(biggest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(CheckpointError, match=r"step 20 .*unusable .*checksum mismatch"):
    export.export(rotten + "@20", "stablehlo", str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_unsupported_primitive_is_named():
  with pytest.raises(onnx_graph.UnsupportedError, match="'cumsum'"):
    onnx_graph.to_onnx(lambda x: {"y": jax.numpy.cumsum(x, axis=1)}, (4,), np.float32)


def _script(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "export.py"), *args],
                        capture_output=True, text=True, timeout=300)


def test_script_bad_input_is_one_error_line_and_writes_nothing(workdir, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), empty)
  out = str(tmp_path / "out")
  existing = tmp_path / "existing"
  existing.mkdir()
  cases = [
      (["--workdir=" + workdir, "--format=tflite", "--output=" + out],
       "error: --format='tflite' is not an export format; known: stablehlo, savedmodel, onnx."),
      (["--workdir=" + str(empty), "--format=onnx", "--output=" + out],
       f"error: {empty} has no checkpoint (no step folders in"),
      (["--workdir=" + workdir, "--format=onnx", "--output=" + str(existing)],
       f"error: --output={existing} exists; give --overwrite to replace it."),
      (["--workdir=" + workdir + "@7", "--format=onnx", "--output=" + out],
       "error: No checkpoint at step 7 in"),
  ]
  for args, message in cases:
    result = _script(*args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr
  assert sorted(os.listdir(tmp_path)) == ["empty", "existing"]
  assert os.listdir(existing) == []


def test_script_exports_and_reports(workdir, tmp_path):
  out = str(tmp_path / "hlo")
  result = _script("--workdir=" + workdir + "@10", "--format=stablehlo", "--output=" + out)
  assert result.returncode == 0, result.stderr
  assert f"exported {workdir} step 10 as stablehlo (float32) to {out}" in result.stdout
  assert "top-5 identical 8/8" in result.stdout
  assert json.load(open(os.path.join(out, "export.json")))["source"]["step"] == 10
