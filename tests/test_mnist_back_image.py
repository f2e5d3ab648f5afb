"""MNIST-back-image (bn_inception/data/mnist_back_image.py): composed from small stand-in
sources (a few real MNIST digits when on hand, else drawn strokes; textured JPEGs in
synset folders), so every test runs in seconds."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bn_inception import config_checks, schema
from bn_inception.data import DataError, create_source
from bn_inception.data import mnist, mnist_back_image as mbi
from configs import back_image_lr_acceleration

REPO = Path(__file__).resolve().parents[1]
MNIST = Path(schema.default_data_root()) / "mnist"
SAMPLE = Path(schema.default_data_root()) / "imagenet_sample"
N_TRAIN, N_TEST, SYNSETS = 60, 30, 10


def stand_in_digits(n, seed):
  """n digits [n, 28, 28] and labels: real MNIST's first n when on hand, else bars."""
  if MNIST.is_dir():
    arrays = mnist.load_idx_dir(str(MNIST))
    split = "train" if seed == 0 else "test"
    return arrays[f"{split}_images"][:n], arrays[f"{split}_labels"][:n]
  rng = np.random.default_rng(seed)
  digits = np.zeros((n, 28, 28), np.uint8)
  for d in digits:
    r, c = rng.integers(4, 20, 2)
    d[r:r + 8, c:c + 3] = 255
  return digits, rng.integers(0, 10, n).astype(np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """(mnist_dir, backgrounds_dir, source arrays): IDX files and SYNSETS textured JPEGs."""
  root = tmp_path_factory.mktemp("sources")
  (root / "mnist").mkdir()
  arrays = {}
  for split, n, seed in (("train", N_TRAIN, 0), ("test", N_TEST, 1)):
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = stand_in_digits(n, seed)
    for key in ("images", "labels"):
      mbi.write_idx(str(root / "mnist" / mnist.FILES[f"{split}_{key}"]),
                    arrays[f"{split}_{key}"])
  rng = np.random.default_rng(7)
  for k in range(SYNSETS):
    folder = root / "sample" / f"n{k:08d}"
    folder.mkdir(parents=True)
    pixels = rng.integers(0, 256, (90 + 10 * k, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f"n{k:08d}_x.JPEG", quality=90)
  return str(root / "mnist"), str(root / "sample"), arrays


def built(sources, out, rotated=False):
  os.makedirs(out, exist_ok=True)
  return mbi.build(sources[0], sources[1], str(out), rotated)


def read(out):
  return mnist.load_idx_dir(str(out))


def test_shapes_and_label_order(sources, tmp_path):
  built(sources, tmp_path)
  got, src = read(tmp_path), sources[2]
  for split, n in (("train", N_TRAIN), ("test", N_TEST)):
    assert got[f"{split}_images"].shape == (n, 28, 28)
    assert got[f"{split}_images"].dtype == np.uint8
    np.testing.assert_array_equal(got[f"{split}_labels"], src[f"{split}_labels"])
    assert not np.array_equal(got[f"{split}_images"], src[f"{split}_images"])  # backgrounds


def test_train_and_test_backgrounds_come_from_disjoint_images(sources, tmp_path):
  manifest = built(sources, tmp_path)
  files = manifest["background_files"]
  synsets = {split: {f.split(os.sep)[0] for f in files[split]} for split in files}
  assert synsets["train"].isdisjoint(synsets["test"])
  assert len(synsets["train"]) + len(synsets["test"]) == SYNSETS
  assert len(synsets["test"]) == SYNSETS // mbi.TEST_EVERY
  for split in ("train", "test"):   # each example's background is one of its split's
    which = np.load(tmp_path / f"{split}-background-index.npy")
    assert which.min() >= 0 and which.max() < len(files[split])


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="ImageNet sample not found")
def test_the_sample_splits_800_training_and_200_test_synsets():
  split = mbi.split_synsets(os.listdir(SAMPLE))
  assert (len(split["train"]), len(split["test"])) == (800, 200)
  assert set(split["train"]).isdisjoint(split["test"])


def test_two_builds_are_bit_equal_and_each_example_depends_on_split_and_index(sources,
                                                                              tmp_path):
  first = built(sources, tmp_path / "a")
  second = built(sources, tmp_path / "b")
  assert first["sha256"] == second["sha256"]
  for name in mnist.FILES.values():
    digest = hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest()
    assert digest == first["sha256"][name]
  # Examples 10..19 composed alone are the full build's 10..19.
  backgrounds = [mbi.load_background(os.path.join(sources[1], f))
                 for f in first["background_files"]["train"]]
  alone, _ = mbi.compose(sources[2]["train_images"][10:20], backgrounds, "train", start=10)
  np.testing.assert_array_equal(alone, read(tmp_path / "a")["train_images"][10:20])


def _correlations(a, b):
  a = a.reshape(len(a), -1).astype(float)
  b = b.reshape(len(b), -1).astype(float)
  a -= a.mean(1, keepdims=True)
  b -= b.mean(1, keepdims=True)
  return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-9)


def test_the_digits_are_still_there(sources, tmp_path):
  built(sources, tmp_path)
  digits, composed = sources[2]["train_images"], read(tmp_path)["train_images"]
  own = _correlations(digits, composed)
  other = _correlations(np.roll(digits, 1, axis=0), composed)
  assert own.mean() > 0.4, own.mean()
  assert own.mean() > other.mean() + 0.3, (own.mean(), other.mean())
  full_stroke = digits == 255                    # opaque ink stays white
  assert (composed[full_stroke] == 255).all()


def test_rotated_variant_keeps_labels_and_backgrounds_and_turns_the_digits(sources, tmp_path):
  built(sources, tmp_path / "plain")
  built(sources, tmp_path / "rot", rotated=True)
  plain, rot = read(tmp_path / "plain"), read(tmp_path / "rot")
  np.testing.assert_array_equal(plain["train_labels"], rot["train_labels"])
  np.testing.assert_array_equal(np.load(tmp_path / "plain" / "train-background-index.npy"),
                                np.load(tmp_path / "rot" / "train-background-index.npy"))
  changed = (plain["train_images"] != rot["train_images"]).reshape(N_TRAIN, -1).mean(1)
  assert np.median(changed) > 0.02


def data_config(sources, tmp_path, **overrides):
  fields = {"mnist_dir": sources[0], "backgrounds_dir": sources[1],
            "cache_dir": str(tmp_path / "cache"), **overrides}
  return schema.mnist_back_image_data_config(**fields)


def test_selected_by_config_composed_once_then_read_from_the_cache(sources, tmp_path):
  config = data_config(sources, tmp_path)
  source = create_source(config)
  assert source.image_shape == (28, 28, 1) and source.num_classes == 10
  assert (source.num_train_examples, source.num_eval_examples) == (N_TRAIN, N_TEST)
  folder = Path(mbi.cache_folder(config))
  stamp = (folder / "manifest.json").stat().st_mtime_ns
  again = create_source(config)
  assert (folder / "manifest.json").stat().st_mtime_ns == stamp   # not rebuilt
  np.testing.assert_array_equal(again.train_images, source.train_images)
  assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary left
  with open(folder / mnist.FILES["test_images"], "r+b") as f:   # damage it
    f.seek(100)
    f.write(b"\x01\x02")
  with pytest.raises(DataError, match="damaged .*delete the folder"):
    create_source(config)


@pytest.mark.parametrize("missing, expected", [
    ("mnist_dir", "needs the MNIST IDX files: .* is not a folder"),
    ("backgrounds_dir", "backgrounds_dir=.* is not a folder"),
])
def test_missing_source_data_is_one_clear_error_and_writes_nothing(sources, tmp_path,
                                                                   missing, expected):
  config = data_config(sources, tmp_path, **{missing: str(tmp_path / "nowhere")})
  with pytest.raises(DataError, match=expected) as e:
    create_source(config)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "cache").exists()


def test_a_folder_without_images_for_a_split_is_refused(sources, tmp_path):
  (tmp_path / "few" / "n00000001").mkdir(parents=True)
  config = data_config(sources, tmp_path, backgrounds_dir=str(tmp_path / "few"))
  with pytest.raises(DataError, match="no images for the train and test split"):
    create_source(config)


def test_the_twin_configs_select_it_and_validate():
  config = back_image_lr_acceleration.get_config("bn_x30,2500,rotated")
  config_checks.validate(config)
  assert (config.data.name, config.data.variant) == ("mnist_back_image", "rotated")
  assert config.train.num_steps == 2400          # the twin's bn_x30 at 2,500
  assert back_image_lr_acceleration.get_config("inception").data.variant == "plain"
  config.data.variant = "tilted"
  with pytest.raises(config_checks.ConfigError, match="data.variant"):
    config_checks.validate(config)


def test_the_preview_grid_is_a_png_of_the_rows(sources, tmp_path):
  from bn_inception import figures
  built(sources, tmp_path)
  images = read(tmp_path)["train_images"]
  path = figures.write_example_grid({"a": images[:10], "b": images[10:15]},
                                    str(tmp_path / "grid.png"))
  with Image.open(path) as png:
    assert png.format == "PNG" and png.width > 2 * png.height   # 10 columns, 2 rows
