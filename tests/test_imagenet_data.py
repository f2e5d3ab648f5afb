"""The ImageNet input pipeline: image folder (shared imagenet_sample) and TFDS sources."""

import importlib.resources
import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from bn_inception import config_checks, schema
from bn_inception.data import DataError, create_source, default_data_root
from bn_inception.data.base import EpochSampler
from bn_inception.data import imagenet, imagenet_tfds

SAMPLE = os.path.join(default_data_root(), "imagenet_sample")
needs_sample = pytest.mark.skipif(not os.path.isdir(SAMPLE),
                                  reason=f"shared ImageNet sample not at {SAMPLE}")
SIZE = 32


def config(**overrides):
  overrides.setdefault("image_size", SIZE)
  return schema.imagenet_data_config(**overrides)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def save(path, array, fmt=None, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(np.asarray(array, np.uint8))
  if mode:
    image = image.convert(mode)
  image.save(path, fmt)


@pytest.fixture(scope="module")
def sample():
  return create_source(config(train_dir=SAMPLE))


# ----------------------------------------------------------------- the shared sample


@needs_sample
def test_sample_eval_every_file_once_in_synset_order(sample):
  synsets = sorted(os.listdir(SAMPLE))  # independent: the ILSVRC-2012 label order
  assert sample.num_classes == 1000 and sample.num_eval_examples == 1000
  batches = list(sample.eval_batches(96))  # 96 does not divide 1000
  assert len(batches) == 11
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert images.dtype == np.uint8 and images.shape == (1056, SIZE, SIZE, 3)
  assert mask.sum() == 1000 and mask[:1000].all() and not mask[1000:].any()
  # One image per class, folders in sorted order: example k has label k.
  np.testing.assert_array_equal(labels[:1000], np.arange(1000))
  assert synsets[0] == "n01440764" and labels[synsets.index("n01440764")] == 0
  assert synsets[-1] == "n15075141" and labels[synsets.index("n15075141")] == 999
  # A greyscale JPEG (PIL mode L) comes out as 3 equal channels; colour ones do not.
  grey = synsets.index("n02096051")  # n02096051_Airedale.JPEG, mode L
  assert Image.open(os.path.join(SAMPLE, "n02096051", os.listdir(
      os.path.join(SAMPLE, "n02096051"))[0])).mode == "L"
  assert (images[grey, ..., 0] == images[grey, ..., 1]).all()
  assert (images[grey, ..., 0] == images[grey, ..., 2]).all()
  assert not (images[0, ..., 0] == images[0, ..., 2]).all()
  # Two processes: each example once in total, in the same places.
  halves = [list(sample.eval_batches(96, p, 2)) for p in (0, 1)]
  assert sum(b["mask"].sum() for h in halves for b in h) == 1000
  np.testing.assert_array_equal(
      np.concatenate([np.concatenate([h0["label"], h1["label"]]) for h0, h1 in zip(*halves)]),
      labels)


@needs_sample
def test_sample_eval_crop_matches_pil_reference():
  """Central crop of fraction f, resized: compared with an independent PIL version."""
  source = create_source(config(train_dir=SAMPLE, image_size=48, antialias=True,
                                  eval_crop_fraction=0.875))
  batch = next(source.eval_batches(4))
  for k, synset in enumerate(sorted(os.listdir(SAMPLE))[:4]):
    folder = os.path.join(SAMPLE, synset)
    image = Image.open(os.path.join(folder, os.listdir(folder)[0])).convert("RGB")
    w, h = image.size
    side = round(min(w, h) * 0.875)
    top, left = (h - side) // 2, (w - side) // 2
    ref = np.asarray(image.crop((left, top, left + side, top + side)).resize(
        (48, 48), Image.BILINEAR), np.float32)
    err = np.abs(batch["image"][k].astype(np.float32) - ref).mean()
    assert err < 6.0, (synset, err)  # resamplers differ a little; a wrong crop is > 20


@needs_sample
def test_train_order_is_a_function_of_seed_and_step(sample):
  run = take(sample.train_batches(0, 16, seed=3), 4)
  resumed = next(sample.train_batches(3, 16, seed=3))
  np.testing.assert_array_equal(resumed["image"], run[3]["image"])
  np.testing.assert_array_equal(resumed["label"], run[3]["label"])
  for k, batch in enumerate(run):  # label k is example k here, so labels = sampler order
    assert batch["image"].shape == (16, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["label"], EpochSampler(1000, 3).indices(k, 16))
  other = next(sample.train_batches(3, 16, seed=4))
  assert not np.array_equal(other["label"], run[3]["label"])


@needs_sample
def test_processes_get_disjoint_halves_of_the_global_batch(sample):
  whole = take(sample.train_batches(5, 16, seed=1), 2)
  halves = [take(sample.train_batches(5, 16, seed=1, process_index=p, process_count=2), 2)
            for p in (0, 1)]
  for step in range(2):
    h0, h1 = halves[0][step], halves[1][step]
    assert h0["image"].shape[0] == h1["image"].shape[0] == 8
    assert not set(h0["label"]) & set(h1["label"])
    # Augmentation is seeded by global stream position: the same images as one process.
    np.testing.assert_array_equal(np.concatenate([h0["image"], h1["image"]]),
                                  whole[step]["image"])
    np.testing.assert_array_equal(np.concatenate([h0["label"], h1["label"]]),
                                  whole[step]["label"])


# ----------------------------------------------------------------- synthetic folders


def two_colour_image(h=64, w=64):
  image = np.zeros((h, w, 3), np.uint8)
  image[:, : w // 2] = (255, 0, 0)
  image[:, w // 2:] = (0, 0, 255)
  return image


def test_flip_crop_and_distortion(tmp_path):
  save(str(tmp_path / "a" / "x.png"), two_colour_image())
  whole = dict(train_dir=str(tmp_path), image_size=16, crop_area_range=(1.0, 1.0),
               aspect_ratio_range=(1.0, 1.0))
  red_left = np.asarray(Image.fromarray(two_colour_image()).resize((16, 16), Image.NEAREST))

  def images(**kw):
    source = create_source(config(**whole, **kw))
    return np.concatenate([b["image"] for b in take(source.train_batches(0, 8, seed=0), 4)])

  plain = images(random_flip=False, distortion_strength=0.0)
  assert (plain == red_left).all()  # the full image; bilinear is exact on flat halves
  flipped = images(random_flip=True, distortion_strength=0.0)
  is_flipped = [(im == red_left[:, ::-1]).all() for im in flipped]
  assert all(f or (im == red_left).all() for f, im in zip(is_flipped, flipped))
  assert 0 < sum(is_flipped) < len(flipped)  # 32 fair coins
  distorted = images(random_flip=False, distortion_strength=1.0, distort_on_device=False)
  assert (np.abs(distorted.astype(int) - plain).max(axis=(1, 2, 3)) > 0).all()
  # Distorting on device: the host sends the undistorted crop and a colour seed.
  on_device = create_source(config(**whole, random_flip=False, distortion_strength=1.0))
  batch = next(on_device.train_batches(0, 8, seed=0))
  assert (batch["image"] == red_left).all()
  assert batch["color_seed"].dtype == np.uint32 and batch["color_seed"].shape == (8, 2)
  assert len({tuple(s) for s in batch["color_seed"]}) == 8  # one per example


def test_random_crops_have_the_configured_area_and_aspect(tmp_path):
  """Pixels encode their coordinates (R = 3x, G = 3y): a nearest upsampled crop shows
  its exact extent, which must cover 25-50% of the image at aspect 3/4..4/3."""
  y, x = np.mgrid[:80, :80]
  save(str(tmp_path / "a" / "xy.png"), np.stack([3 * x, 3 * y, 0 * x], -1))
  source = create_source(config(train_dir=str(tmp_path), image_size=80, random_flip=False,
                                  distortion_strength=0.0, crop_area_range=(0.25, 0.5),
                                  resize_method="nearest"))
  areas = []
  for batch in take(source.train_batches(0, 16, seed=0), 3):
    for image in batch["image"].astype(int):
      w = (image[..., 0].max() - image[..., 0].min()) // 3 + 1
      h = (image[..., 1].max() - image[..., 1].min()) // 3 + 1
      areas.append(w * h / 6400)
      assert 0.25 - 0.02 <= areas[-1] <= 0.5 + 0.02, (w, h)
      assert 3 / 4 - 0.03 <= w / h <= 4 / 3 + 0.03, (w, h)
  assert np.std(areas) > 0.02  # really random


def test_eval_central_crop(tmp_path):
  image = np.full((60, 100, 3), (255, 0, 0), np.uint8)
  image[15:45, 35:65] = (0, 255, 0)  # the central 30x30 = 0.5 of the shorter side
  save(str(tmp_path / "a" / "c.png"), image)
  source = create_source(config(train_dir=str(tmp_path), image_size=16,
                                  eval_crop_fraction=0.5))
  (batch,) = list(source.eval_batches(2))
  assert (batch["image"][0] == (0, 255, 0)).all() and list(batch["mask"]) == [True, False]
  assert (batch["image"][1] == 0).all()  # padding


def test_cmyk_and_greyscale_come_out_rgb(tmp_path):
  rgb = np.zeros((40, 40, 3), np.uint8)
  rgb[:, :20], rgb[:, 20:] = (200, 60, 30), (30, 90, 220)
  save(str(tmp_path / "a" / "cmyk.jpg"), rgb, "JPEG", mode="CMYK")
  save(str(tmp_path / "b" / "grey.JPEG"), rgb, "JPEG", mode="L")
  assert Image.open(tmp_path / "a" / "cmyk.jpg").mode == "CMYK"
  source = create_source(config(train_dir=str(tmp_path), image_size=40,
                                  eval_crop_fraction=1.0))
  batch = next(source.eval_batches(2))
  assert batch["image"].shape == (2, 40, 40, 3)
  reference = np.asarray(Image.open(tmp_path / "a" / "cmyk.jpg").convert("RGB"), np.float32)
  assert np.abs(batch["image"][0].astype(np.float32) - reference).mean() < 4.0
  assert np.abs(batch["image"][0][5:35, 5:15].mean((0, 1)) - (200, 60, 30)).max() < 12
  grey = batch["image"][1]
  assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def corrupt_folder(root):
  for k in range(3):
    save(str(root / "a" / f"good{k}.jpg"), np.full((20, 20, 3), 40 * k, np.uint8), "JPEG")
  os.makedirs(root / "b")
  (root / "b" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
  return str(root / "b" / "broken.JPEG")


def test_corrupt_jpeg_is_named(tmp_path):
  broken = corrupt_folder(tmp_path)
  source = create_source(config(train_dir=str(tmp_path)))
  with pytest.raises(DataError, match="broken.JPEG.*skip_corrupt_images"):
    list(source.eval_batches(4))
  with pytest.raises(DataError, match=broken):
    take(source.train_batches(0, 4, seed=0), 2)


def test_corrupt_jpeg_skipped_counted_and_resumable(tmp_path):
  corrupt_folder(tmp_path)
  cfg = config(train_dir=str(tmp_path), skip_corrupt_images=True)
  source = create_source(cfg)
  (batch,) = list(source.eval_batches(4))  # files: good0..2 (label 0), broken (label 1)
  np.testing.assert_array_equal(batch["mask"], [True, True, True, False])
  assert source.num_skipped_images == 1
  run = take(source.train_batches(0, 4, seed=0), 3)
  assert all((b["label"] == 0).all() for b in run)  # the broken one replaced by a good one
  # A fresh source (resumed run: knows nothing yet) gives the same batches.
  resumed = next(create_source(cfg).train_batches(2, 4, seed=0))
  np.testing.assert_array_equal(resumed["image"], run[2]["image"])


# ----------------------------------------------------------------- config and errors


def test_missing_dirs_and_bad_fields_say_what_to_do(tmp_path):
  with pytest.raises(DataError, match=r"nowhere.*config\.data\.train_dir"):
    create_source(config(train_dir=str(tmp_path / "nowhere")))
  os.makedirs(tmp_path / "empty" / "n0")
  with pytest.raises(DataError, match="No images"):
    create_source(config(train_dir=str(tmp_path / "empty")))
  missing = str(tmp_path / "tfds")
  with pytest.raises(DataError) as e:
    create_source(config(name="imagenet_tfds", tfds_data_dir=missing))
  msg = str(e.value)
  for needle in ("config.data.tfds_data_dir", "ILSVRC2012_img_train.tar",
                 "ILSVRC2012_img_val.tar", os.path.join(missing, "downloads", "manual"),
                 f"tfds build imagenet2012 --data_dir={missing}", "download_and_prepare"):
    assert needle in msg, needle
  os.makedirs(missing)
  with pytest.raises(DataError, match="not prepared.*downloads"):
    create_source(config(name="imagenet_tfds", tfds_data_dir=missing))
  with pytest.raises(KeyError, match="no field"):
    schema.imagenet_data_config(imagesize=3)
  # Field values are the validator's (config_checks), checked before any source is built.
  bad = schema.run_config(config(distortion_strength=2.0), schema.mlp_model_config())
  with pytest.raises(config_checks.ConfigError,
                     match=r"config.data.distortion_strength=2.0 must be in \[0.0, 1.0\]"):
    config_checks.validate(bad)


def test_factory_and_eval_split_options(tmp_path):
  for k in range(10):
    save(str(tmp_path / f"n{k % 2}" / f"{k}.png"), np.full((8, 8, 3), k, np.uint8))
  source = create_source(config(train_dir=str(tmp_path), eval_fraction=0.3))
  assert isinstance(source, imagenet.RandomAccessImageSource)
  assert (source.num_train_examples, source.num_eval_examples) == (7, 3)
  held = set(source.eval_reader.paths)
  assert not held & set(source.train_reader.paths)
  os.makedirs(tmp_path / "other" / "n9")
  save(str(tmp_path / "other" / "n9" / "z.png"), np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(DataError, match="n9"):
    create_source(config(train_dir=str(tmp_path), eval_dir=str(tmp_path / "other")))
  same = create_source(config(train_dir=str(tmp_path)))
  assert same.eval_reader is same.train_reader and same.num_classes == 2


# ----------------------------------------------------------------- TFDS imagenet2012


def _jpeg(value):
  buf = io.BytesIO()
  Image.fromarray(np.full((24, 30, 3), value, np.uint8)).save(buf, "JPEG")
  return buf.getvalue()


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def build_fake_imagenet2012(data_dir, file_format, monkeypatch):
  """A tiny imagenet2012 prepared by the real TFDS builder from fake ILSVRC tars."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import dataset_builder
  # tfds 4.9.10 needs the `importlib_resources` backport here; the stdlib module does it.
  monkeypatch.setattr(dataset_builder, "importlib_resources", importlib.resources)
  manual = os.path.join(data_dir, "downloads", "manual")
  os.makedirs(manual)
  with tarfile.open(os.path.join(manual, "ILSVRC2012_img_train.tar"), "w") as train:
    for synset, value in (("n01440764", 10), ("n01443537", 120), ("n15075141", 240)):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as t:
        for k in range(3):
          _add(t, f"{synset}_{k}.JPEG", _jpeg(value + k))
      _add(train, synset + ".tar", inner.getvalue())
  with tarfile.open(os.path.join(manual, "ILSVRC2012_img_val.tar"), "w") as val:
    for k in range(1, 6):
      _add(val, f"ILSVRC2012_val_{k:08d}.JPEG", _jpeg(20 * k))
  builder = tfds.builder("imagenet2012", data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual))


def _val_labels():
  """Labels of ILSVRC2012_val_00000001..5 from TFDS's own files (independent of our code)."""
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common
  base = os.path.dirname(imagenet_common.__file__)
  names = open(os.path.join(base, "labels.txt")).read().split()
  val = open(os.path.join(base, "validation_labels.txt")).read().split()[:5]
  return [names.index(s) for s in val]


@pytest.mark.parametrize("file_format, kind", [
    ("array_record", imagenet.RandomAccessImageSource),
    ("tfrecord", imagenet_tfds.TfdsStreamingSource)])
def test_tfds_imagenet2012(tmp_path, monkeypatch, file_format, kind):
  data_dir = str(tmp_path / "tfds")
  build_fake_imagenet2012(data_dir, file_format, monkeypatch)
  source = create_source(config(name="imagenet_tfds", tfds_data_dir=data_dir,
                                  shuffle_buffer=4))
  assert type(source) is kind
  assert (source.num_classes, source.num_train_examples, source.num_eval_examples) == (
      1000, 9, 5)
  batches = list(source.eval_batches(4))
  assert len(batches) == 2
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])[mask]
  images = np.concatenate([b["image"] for b in batches])[mask]
  assert mask.sum() == 5 and not mask[5:].any()
  # Validation image k is a flat 20k: each comes once, with TFDS's label for file k.
  ks = np.round(images.mean(axis=(1, 2, 3)) / 20).astype(int)
  assert sorted(ks) == [1, 2, 3, 4, 5]
  np.testing.assert_array_equal(labels, np.asarray(_val_labels())[ks - 1])
  halves = [list(source.eval_batches(4, p, 2)) for p in (0, 1)]  # two processes
  assert [len(h) for h in halves] == [2, 2]
  for k, batch in enumerate(batches):  # the same rows, split in halves
    for field in ("image", "label", "mask"):
      np.testing.assert_array_equal(batch[field], np.concatenate([h[k][field] for h in halves]))
  # 4 steps of 4 cross the 9-example epoch; resuming at step 3 gives the same batch.
  run = take(source.train_batches(0, 4, seed=7), 4)
  resumed = next(source.train_batches(3, 4, seed=7))
  np.testing.assert_array_equal(resumed["image"], run[3]["image"])
  np.testing.assert_array_equal(resumed["label"], run[3]["label"])
  assert run[0]["image"].shape == (4, SIZE, SIZE, 3)
  for batch in run:  # a train image's grey level tells its synset: 10+k, 120+k, 240+k
    level = batch["image"].mean(axis=(1, 2, 3))  # (colour distortion moves it a little)
    expected = np.select([level < 65, level < 180], [0, 1], 999)
    np.testing.assert_array_equal(batch["label"], expected)
  if kind is imagenet.RandomAccessImageSource:  # every example once per epoch
    epoch = np.concatenate([b["label"] for b in take(source.train_batches(0, 9, seed=7), 1)])
    assert sorted(epoch) == [0] * 3 + [1] * 3 + [999] * 3
