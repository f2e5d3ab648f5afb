"""Photometric distortion on device (data/device_augment.py) against TensorFlow's ops,
and its place in the ImageNet pipeline (seeds, resume, the train step)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from bn_inception import schema
from bn_inception.data import augment, create_source, default_data_root, device_augment

SAMPLE = os.path.join(default_data_root(), "imagenet_sample")


def tf_reference(image01, key, strength):
  """tf.image's adjust ops in Inception's order, with the factors the key draws
  (each uniform in the range augment.distort_color uses on the host)."""
  k = jax.random.split(key, 4)
  draw = lambda i, lo, hi: float(jax.random.uniform(k[i], (), minval=lo, maxval=hi))
  b = augment.BRIGHTNESS_DELTA * strength
  s = augment.SATURATION_SPREAD * strength
  h = augment.HUE_DELTA * strength
  c = augment.CONTRAST_SPREAD * strength
  x = tf.constant(image01, tf.float32)
  x = tf.image.adjust_brightness(x, draw(0, -b, b))
  x = tf.image.adjust_saturation(x, draw(1, 1 - s, 1 + s))
  x = tf.image.adjust_hue(x, draw(2, -h, h))
  x = tf.image.adjust_contrast(x, draw(3, 1 - c, 1 + c))
  return np.clip(x.numpy(), 0, 1)


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_matches_tensorflow_adjust_ops(strength):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 12, 10, 3), dtype=np.uint8)
  seeds = rng.integers(0, 2**32, (4, 2), dtype=np.uint32)
  out = np.asarray(device_augment.distort_color(images, seeds, strength))
  assert out.shape == images.shape and out.dtype == np.float32
  for image, seed, got in zip(images, seeds, out):
    key = jax.random.wrap_key_data(jnp.asarray(seed), impl="threefry2x32")
    want = tf_reference(image / 255.0, key, strength) * 255.0
    np.testing.assert_allclose(got, want, atol=0.02 * 255)  # hue: HSV round trips differ
    assert np.abs(got - want).mean() < 0.002 * 255


def test_brightness_and_contrast_ranges_on_grey_images():
  """Saturation and hue leave grey alone, so a two-level grey image shows the
  brightness delta (mean shift) and the contrast factor (level gap) directly."""
  n, strength = 400, 1.0
  image = np.full((n, 4, 4, 3), 96, np.uint8)
  image[:, :, 2:] = 160  # levels 96 and 160 (gap 64), mean 128
  seeds = np.random.default_rng(1).integers(0, 2**32, (n, 2), dtype=np.uint32)
  out = np.asarray(device_augment.distort_color(image, seeds, strength))
  shift = out.mean(axis=(1, 2, 3)) - 128.0
  factor = (out[:, :, 2:].mean(axis=(1, 2, 3)) - out[:, :, :2].mean(axis=(1, 2, 3))) / 64.0
  assert np.abs(shift).max() <= 32.0 + 1e-3 and np.abs(shift).max() > 28.0
  assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 1.5 + 1e-4
  assert factor.min() < 0.55 and factor.max() > 1.45
  # Strength 0 is the identity.
  np.testing.assert_array_equal(device_augment.distort_color(image[:2], seeds[:2], 0.0), image[:2])


def _folder_config(**kw):
  return schema.imagenet_data_config(train_dir=SAMPLE, image_size=24, **kw)


@pytest.mark.skipif(not os.path.isdir(SAMPLE), reason=f"no {SAMPLE}")
def test_pipeline_sends_seeds_that_resume_exactly_and_the_step_distorts():
  source = create_source(_folder_config(distortion_strength=0.5))
  host = create_source(_folder_config(distortion_strength=0.0))
  it = source.train_batches(0, 16, seed=3)
  first, second = next(it), next(it)
  resumed = next(source.train_batches(1, 16, seed=3))
  for key in ("image", "label", "color_seed"):
    np.testing.assert_array_equal(second[key], resumed[key])
  # The host images are the undistorted crops of the same examples.
  np.testing.assert_array_equal(first["image"], next(host.train_batches(0, 16, seed=3))["image"])
  assert source.train_extras == {"color_seed": ((2,), np.uint32)} and host.train_extras == {}
  # On device: the distortion of those seeds, then normalisation.
  x = np.asarray(jax.jit(source.train_inputs)(first))
  want = source.normalize(device_augment.distort_color(first["image"], first["color_seed"], 0.5))
  np.testing.assert_allclose(x, want, atol=1e-5)
  assert np.abs(x - np.asarray(source.normalize(first["image"]))).mean() > 0.01
  np.testing.assert_allclose(np.asarray(host.train_inputs(
      {k: v for k, v in first.items() if k != "color_seed"})),
      np.asarray(host.normalize(first["image"])))
