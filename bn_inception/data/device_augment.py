"""Inception's photometric distortion on the accelerator, inside the jitted train step.

Decoding and cropping must happen on the host, but the colour distortion is
pure elementwise work that costs the host ~35% of its per-image time at 224 px
(measured: 400 vs 636 img/s per core with and without it) and the accelerator
almost nothing. With `config.data.distort_on_device` the host pipeline crops,
resizes and flips, and sends each example's colour seed (`COLOR_SEED`, the
uint32[2] key data the host would have drawn its distortion from) beside the
uint8 image; `distort_color` applies the same four distortions as
`augment.distort_color` (same order, same ranges, dm_pix's equivalents of the
tf.image ops) to the whole batch on device. Randomness stays a function of
(seed, example position), so resumed runs are still exact.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

from bn_inception.data.augment import (BRIGHTNESS_DELTA, CONTRAST_SPREAD, HUE_DELTA,
                                       SATURATION_SPREAD)

COLOR_SEED = "color_seed"  # per-example uint32[2] in training batches


def distort_color_one(image: jax.Array, key: jax.Array, strength: float) -> jax.Array:
  """One float image in [0, 1], one key -> distorted image in [0, 1] (strength > 0)."""
  k = jax.random.split(key, 4)
  image = pix.random_brightness(k[0], image, BRIGHTNESS_DELTA * strength)
  spread = SATURATION_SPREAD * strength
  image = pix.random_saturation(k[1], image, 1 - spread, 1 + spread)
  image = pix.random_hue(k[2], image, HUE_DELTA * strength)
  spread = CONTRAST_SPREAD * strength
  image = pix.random_contrast(k[3], image, 1 - spread, 1 + spread)
  return jnp.clip(image, 0.0, 1.0)


def distort_color(images: jax.Array, color_seeds: jax.Array, strength: float) -> jax.Array:
  """uint8 [B, H, W, 3] + uint32 [B, 2] -> float32 [B, H, W, 3] in 0..255."""
  if strength <= 0:
    return jnp.asarray(images, jnp.float32)
  x = jnp.asarray(images, jnp.float32) / 255.0
  keys = jax.random.wrap_key_data(jnp.asarray(color_seeds, jnp.uint32), impl="threefry2x32")
  return jax.vmap(lambda im, key: distort_color_one(im, key, strength))(x, keys) * 255.0
