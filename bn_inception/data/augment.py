"""Image ops for the ImageNet pipeline: decode, Inception crops, flips, colour, eval crops.

All functions are TensorFlow graph ops on ONE encoded image (JPEG, PNG, ...) and
return uint8 [size, size, 3] RGB (greyscale and CMYK JPEGs are converted to RGB
by the decoder). Every random choice uses a stateless op seeded by the caller,
so an example's augmentation is a function of its seed alone (a resumed run
reproduces it bit for bit).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

# Inception's photometric distortion at strength 1 (TF-slim inception_preprocessing
# distort_color): brightness +-32/255, saturation and contrast x[0.5, 1.5], hue +-0.2.
BRIGHTNESS_DELTA = 32.0 / 255.0
SATURATION_SPREAD = 0.5
HUE_DELTA = 0.2
CONTRAST_SPREAD = 0.5


def decode_window(data: tf.Tensor, window_fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
  """Decode the window [y, x, h, w] = window_fn([height, width]) of an encoded image.

  JPEGs are decoded only inside the window (decode_and_crop_jpeg, the expensive
  part of ImageNet input); other formats are decoded whole and sliced.
  """

  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(data)[:2])
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)

  def other():
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    y, x, h, w = tf.unstack(window_fn(tf.shape(image)[:2]))
    return image[y:y + h, x:x + w]

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def inception_crop_window(shape_hw: tf.Tensor, seed: tf.Tensor,
                          area_range: Sequence[float], aspect_ratio_range: Sequence[float],
                          min_object_covered: float, max_attempts: int) -> tf.Tensor:
  """The random patch of GoogLeNet/BN-Inception training [y, x, h, w].

  A patch covering `area_range` of the image area with width/height in
  `aspect_ratio_range` (Szegedy et al. 2014: 8%..100%, 3/4..4/3), sampled as
  tf.image.sample_distorted_bounding_box does; the whole image when no patch
  fits after `max_attempts`.
  """
  shape = tf.concat([tf.cast(shape_hw, tf.int32), [3]], axis=0)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.zeros([1, 0, 4], tf.float32), seed=seed,
      min_object_covered=min_object_covered,
      aspect_ratio_range=tuple(aspect_ratio_range), area_range=tuple(area_range),
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def central_crop_window(shape_hw: tf.Tensor, fraction: float) -> tf.Tensor:
  """The central square of side fraction * shorter side, [y, x, h, w]: the 1-crop
  box of every evaluation (multicrop.crop_plan's 1-crop scheme evaluates this op).

  Cropping this square and resizing it to S x S is the usual "resize the shorter
  side to S / fraction, then take the central S x S" (e.g. 256 -> 224 for
  fraction 0.875), done in the cheaper order. The side is float32(shorter side) x
  float32(fraction) rounded half to even, at least 1; the offsets round down.
  """
  h, w = tf.unstack(tf.cast(shape_hw, tf.int32))
  side = tf.maximum(1, tf.cast(tf.round(tf.cast(tf.minimum(h, w), tf.float32) * fraction),
                               tf.int32))
  return tf.stack([(h - side) // 2, (w - side) // 2, side, side])


def distort_color(image: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
  """Inception's photometric distortion scaled by `strength` in [0, 1] (0: none).

  `image` is float in [0, 1]; brightness, saturation, hue, contrast in this fixed
  order (Inception draws one of several orders; Sec. 4.2.1 of the BN paper
  reduces these distortions for the accelerated networks).
  """
  if strength <= 0:
    return image
  seeds = tf.random.experimental.stateless_split(seed, 4)
  image = tf.image.stateless_random_brightness(image, BRIGHTNESS_DELTA * strength, seeds[0])
  spread = SATURATION_SPREAD * strength
  image = tf.image.stateless_random_saturation(image, 1 - spread, 1 + spread, seeds[1])
  image = tf.image.stateless_random_hue(image, HUE_DELTA * strength, seeds[2])
  spread = CONTRAST_SPREAD * strength
  image = tf.image.stateless_random_contrast(image, 1 - spread, 1 + spread, seeds[3])
  return tf.clip_by_value(image, 0.0, 1.0)


def _resize(image: tf.Tensor, size: int, method: str, antialias: bool) -> tf.Tensor:
  """uint8 [h, w, 3] -> float32 [size, size, 3] in 0..255."""
  return tf.image.resize(tf.cast(image, tf.float32), [size, size], method=method,
                         antialias=antialias)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _split(seed: tf.Tensor):
  return tf.unstack(tf.random.experimental.stateless_split(seed, 3))


def color_seed(seed: tf.Tensor) -> tf.Tensor:
  """uint32[2] key data for the example's colour distortion on device (device_augment)."""
  return tf.random.stateless_uniform([2], seed=_split(seed)[2], minval=None, maxval=None,
                                     dtype=tf.uint32)


def train_image(data: tf.Tensor, seed: tf.Tensor, *, image_size: int,
                area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                min_object_covered: float = 0.0, max_attempts: int = 100,
                random_flip: bool = True, distortion_strength: float = 1.0,
                resize_method: str = "bilinear", antialias: bool = False) -> tf.Tensor:
  """Encoded image + int64 seed[2] -> augmented uint8 [image_size, image_size, 3].

  distortion_strength 0 leaves the colours alone (e.g. to distort on device from
  `color_seed(seed)` instead; crop and flip are the same either way).
  """
  crop_seed, flip_seed, color_seed = _split(seed)
  image = decode_window(data, lambda hw: inception_crop_window(
      hw, crop_seed, area_range, aspect_ratio_range, min_object_covered, max_attempts))
  image = _resize(image, image_size, resize_method, antialias)
  if random_flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if distortion_strength > 0:
    image = distort_color(image / 255.0, color_seed, distortion_strength) * 255.0
  return _to_uint8(image)


def eval_image(data: tf.Tensor, *, image_size: int, crop_fraction: float = 0.875,
               resize_method: str = "bilinear", antialias: bool = False) -> tf.Tensor:
  """Encoded image -> the central crop, uint8 [image_size, image_size, 3]."""
  image = decode_window(data, lambda hw: central_crop_window(hw, crop_fraction))
  return _to_uint8(_resize(image, image_size, resize_method, antialias))
