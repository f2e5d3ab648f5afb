"""Multi-crop evaluation geometry (Sec. 4.2.3, Figure 4) and full-size images of a split.

A crop is one row of a *crop plan*: `(resized_h, resized_w, y, x, h, w, flip)`
(`PLAN_COLUMNS`), all integers: "resize the whole image to resized_h x resized_w,
take the box [y, y+h) x [x, x+w) of that resized image, resize the box to
image_size x image_size, mirror it left-right if flip". `crop_image` does this
in ONE resampling of the original image (tf ScaleAndTranslate, the op behind
tf.image.resize; bilinear = its 'triangle' kernel with half-pixel centres):
when the box is already image_size square that is exactly resize-then-slice,
otherwise it avoids a second blur.

Schemes (`crop_plan`), for model resolution S = image_size:
  1    the pipeline's eval crop, `augment.central_crop_window` (its one definition):
       the central square of side eval_crop_fraction x the shorter side, resized
       to S (resized frame = the original image);
  10   shorter side resized to round(S / eval_crop_fraction) (256 at S = 224),
       its four corner S x S crops and the centre one, then their mirrors;
  144  GoogLeNet (Szegedy et al. 2014, Sec. 7): the shorter side resized to each
       of 256, 288, 320, 352 (times S/224 at another resolution, rounded); three
       squares of that side per scale (left/centre/right, or top/middle/bottom
       for a portrait image); from each the four corner and the central S x S
       crops and the whole square resized to S; each mirrored. 4 x 3 x 6 x 2.
       Order: scale, square, crop, flip (innermost).
Resized sides round half to even (Python's round).

Crops are made one (image, plan row) at a time inside tf.data, so memory holds
one decoded image per in-flight example, never all 144 crops of it.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from bn_inception import schema
from bn_inception.data.base import DataSource, ImageSet

CROP_SCHEMES = schema.CROP_SCHEMES
PLAN_COLUMNS = ("resized_h", "resized_w", "y", "x", "h", "w", "flip")
REFERENCE_SIZE = 224                      # the resolution the paper's sizes refer to
GOOGLENET_SCALES = (256, 288, 320, 352)   # shorter sides of the 144-crop scheme at 224

# tf.image.resize method -> ScaleAndTranslate kernel (antialias=False: no widening).
_KERNELS = {"bilinear": "triangle", "lanczos3": "lanczos3", "lanczos5": "lanczos5",
            "gaussian": "gaussian", "mitchellcubic": "mitchellcubic", "bicubic": "keyscubic"}


def resized_shape(height: int, width: int, shorter: int) -> Tuple[int, int]:
  """(h, w) with the shorter side `shorter`, the aspect ratio kept (longer side rounded)."""
  if height <= width:
    return shorter, max(shorter, int(round(width * shorter / height)))
  return max(shorter, int(round(height * shorter / width))), shorter


def _corners_and_centre(rh: int, rw: int, c: int):
  return [(0, 0), (0, rw - c), (rh - c, 0), (rh - c, rw - c), ((rh - c) // 2, (rw - c) // 2)]


def central_box(height: int, width: int, crop_fraction: float) -> Tuple[int, int, int, int]:
  """The 1-crop box (y, x, h, w) of a height x width image: the training loop's eval
  crop, `augment.central_crop_window`, evaluated eagerly (a TF op)."""
  import tensorflow as tf
  from bn_inception.data import augment
  window = augment.central_crop_window(tf.constant([height, width], tf.int32), crop_fraction)
  return tuple(int(v) for v in window.numpy())


def _central_row(image, crop_fraction: float):
  """The 1-crop plan row of a decoded image, in the graph: (H, W, central box, no flip)."""
  import tensorflow as tf
  from bn_inception.data import augment
  shape_hw = tf.shape(image)[:2]
  return tf.concat([shape_hw, augment.central_crop_window(shape_hw, crop_fraction), [0]], 0)


def crop_plan(height: int, width: int, crops: int, image_size: int,
              crop_fraction: float = 0.875) -> np.ndarray:
  """int64 [crops, 7] rows (resized_h, resized_w, y, x, h, w, flip); see the module doc."""
  height, width, c = int(height), int(width), int(image_size)
  if height < 1 or width < 1:
    raise ValueError(f"An image of {height}x{width} pixels cannot be cropped.")
  if c < 1:
    raise ValueError(f"image_size={image_size} must be positive.")
  rows = []
  if crops == 1:
    rows.append((height, width, *central_box(height, width, crop_fraction), 0))
  elif crops == 10:
    rh, rw = resized_shape(height, width, max(c, int(round(c / crop_fraction))))
    boxes = _corners_and_centre(rh, rw, c)
    rows = [(rh, rw, y, x, c, c, flip) for flip in (0, 1) for y, x in boxes]
  elif crops == 144:
    for scale in GOOGLENET_SCALES:
      s = max(c, int(round(scale * c / REFERENCE_SIZE)))
      rh, rw = resized_shape(height, width, s)
      longer = max(rh, rw)
      for offset in (0, (longer - s) // 2, longer - s):
        sy, sx = (0, offset) if rw >= rh else (offset, 0)
        boxes = [(y, x, c, c) for y, x in _corners_and_centre(s, s, c)] + [(0, 0, s, s)]
        for y, x, h, w in boxes:
          for flip in (0, 1):
            rows.append((rh, rw, sy + y, sx + x, h, w, flip))
  else:
    raise ValueError(f"crops={crops} is not a crop scheme; known: {CROP_SCHEMES}.")
  return np.asarray(rows, np.int64)


def crop_image(image, row, image_size: int, resize_method: str = "bilinear",
               antialias: bool = False):
  """uint8 [H, W, C] image + one plan row -> uint8 [image_size, image_size, C] (TF op)."""
  import tensorflow as tf
  if resize_method not in _KERNELS:
    raise ValueError(f"Multi-crop evaluation resamples with one of {sorted(_KERNELS)}, "
                     f"not data.resize_method={resize_method!r}.")
  size = float(image_size)
  in_hw = tf.cast(tf.shape(image)[:2], tf.float32)
  rh, rw, y, x, h, w, flip = tf.unstack(tf.cast(row, tf.float32))
  # Output pixel i samples the original at (i + 0.5) * (h / size) * (H / rh) + y * H / rh - 0.5.
  scale = tf.stack([size * rh / (h * in_hw[0]), size * rw / (w * in_hw[1])])
  translation = tf.stack([-y * size / h, -x * size / w])
  out = tf.raw_ops.ScaleAndTranslate(
      images=image[None], size=tf.constant([image_size, image_size], tf.int32),
      scale=scale, translation=translation, kernel_type=_KERNELS[resize_method],
      antialias=antialias)[0]
  out = tf.cond(flip > 0, lambda: tf.reverse(out, axis=[1]), lambda: out)
  return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


# --------------------------------------------------------------------------- full-size images
# The image sets live beside what they read: base.ImageSet (the interface),
# in_memory.ArrayImageSet, image_readers.EncodedImageSet and TfRecordImageSet.


def image_set(source: DataSource, split: str = "eval") -> ImageSet:
  """Full-size images of `split` ('eval' or 'train') of a source from bn_inception.data."""
  if split not in ("eval", "train"):
    raise ValueError(f"split={split!r}: use 'eval' (the source's evaluation split) or 'train'.")
  images = source.full_size_images(split)
  if images is None:
    raise ValueError(f"Multi-crop evaluation cannot read full-size images from a "
                     f"{type(source).__name__}: its full_size_images() gives none.")
  return images


def crop_dataset(images: ImageSet, indices: np.ndarray, crops: int, image_size: int,
                 crop_fraction: float = 0.875, resize_method: str = "bilinear",
                 antialias: bool = False, num_parallel_calls: int = -1):
  """tf.data of single crops {"image", "label", "position"}, example-major: the `crops`
  crops of indices[0], then those of indices[1], ... Each crop is made from (image,
  plan row) when it is needed, so at most a few decoded images are held at a time."""
  import functools
  import tensorflow as tf
  parallel = tf.data.AUTOTUNE if num_parallel_calls < 0 else num_parallel_calls
  plan_fn = functools.partial(crop_plan, crops=crops, image_size=image_size,
                              crop_fraction=crop_fraction)
  examples = tf.data.Dataset.zip(
      images.dataset(indices, parallel),
      tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64)))

  def plan_of(image):
    shape = tf.shape(image)
    plan = tf.numpy_function(lambda h, w: plan_fn(int(h), int(w)), [shape[0], shape[1]],
                             tf.int64, stateful=False)
    plan.set_shape([crops, len(PLAN_COLUMNS)])
    return plan

  def crop(example, position, row):
    return {"image": crop_image(example["image"], row, image_size, resize_method, antialias),
            "label": example["label"], "position": position}

  def expand(example, position):
    return tf.data.Dataset.from_tensor_slices(plan_of(example["image"])).map(
        lambda row: crop(example, position, row))

  if crops == 1:  # decode and crop in one parallel map
    ds = examples.map(lambda e, p: crop(e, p, _central_row(e["image"], crop_fraction)),
                      num_parallel_calls=parallel, deterministic=True)
  else:
    ds = examples.interleave(expand, cycle_length=4, block_length=crops,
                             num_parallel_calls=parallel, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)
