"""MNIST-back-image (Larochelle et al., ICML 2007): MNIST digits over natural-image patches.

Larochelle, Erhan, Courville, Bergstra, Bengio, "An empirical evaluation of deep
architectures on problems with many factors of variation": mnist-back-image puts
each digit over a textured grey patch of a natural image; mnist-rot-back-image
also rotates the digit by an angle uniform in [0, 2pi). Built here from data on
hand, with no network: the digits (and labels, in their order) from the MNIST IDX
files, the backgrounds from the ImageNet sample's 1,000 JPEGs, training and test
backgrounds from disjoint images (`split_synsets`).

Composed once into IDX files in a cache folder (`cache_folder`), then read like
MNIST: a training run's data are fixed arrays, so the project's (seed, step) order
and bit-equal resumes hold unchanged, and no run pays the JPEG decoding. Every
example is a function of (split, index) alone: its draws come from a generator
seeded by (SEED, split, index) (`compose`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np

from bn_inception.data import mnist
from bn_inception.data.base import DataError
from bn_inception.data.in_memory import InMemorySource
from bn_inception.schema import default_data_root

VERSION = 1              # bump when anything below changes what is composed
SEED = 20070620          # the generator's root seed (ICML 2007's first day)
SPLITS = {"train": 0, "test": 1}
TEST_EVERY = 5           # sorted synsets 0, 5, 10, ... give test backgrounds (200 of 1,000)
BACKGROUND_SIDE = 64     # each image, greyscale, shorter side resized to this many pixels
PATCH = 28               # MNIST's side
MIN_PATCH_STD = 10.0     # a patch must have texture (Larochelle et al. drop low-variance ones)
PATCH_TRIES = 10         # candidate crops per example; the first textured one (else the
#                          most textured) is used
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def default_cache_root() -> str:
  """$XDG_CACHE_HOME/bn_inception, else ~/.cache/bn_inception: never the repo, never
  the read-only data root."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bn_inception")


def split_synsets(synsets: Sequence[str]) -> Dict[str, List[str]]:
  """The fixed split of the background images' synsets: every TEST_EVERY-th of the
  sorted list (0, 5, ...) for test, the rest for training; disjoint by construction."""
  ordered = sorted(synsets)
  return {"train": [s for i, s in enumerate(ordered) if i % TEST_EVERY],
          "test": [s for i, s in enumerate(ordered) if not i % TEST_EVERY]}


def background_files(folder: str) -> Dict[str, List[str]]:
  """split -> the image files (relative to `folder`, sorted) whose synset the split owns."""
  if not os.path.isdir(folder):
    raise DataError(f"MNIST-back-image backgrounds: config.data.backgrounds_dir={folder} "
                    "is not a folder (the ImageNet sample, <synset>/<image>.JPEG).")
  synsets = [s for s in os.listdir(folder) if os.path.isdir(os.path.join(folder, s))]
  out = {}
  for split, owned in split_synsets(synsets).items():
    out[split] = sorted(os.path.join(s, f) for s in owned
                        for f in os.listdir(os.path.join(folder, s))
                        if f.lower().endswith(IMAGE_SUFFIXES))
  empty = [split for split, files in out.items() if not files]
  if empty:
    raise DataError(f"MNIST-back-image backgrounds: {folder} gives no images for the "
                    f"{' and '.join(empty)} split (it needs >= {TEST_EVERY} synset folders "
                    "of JPEGs, e.g. ../shared/data/imagenet_sample).")
  return out


def load_background(path: str) -> np.ndarray:
  """One image as uint8 greyscale [h, w], its shorter side BACKGROUND_SIDE pixels."""
  from PIL import Image
  try:
    with Image.open(path) as img:
      img.draft("L", (BACKGROUND_SIDE * 2, BACKGROUND_SIDE * 2))  # JPEG: decode smaller
      grey = img.convert("L")
  except OSError as e:
    raise DataError(f"MNIST-back-image background {path} could not be read ({e}).") from e
  w, h = grey.size
  scale = BACKGROUND_SIDE / min(w, h)
  size = (max(PATCH, round(w * scale)), max(PATCH, round(h * scale)))
  return np.asarray(grey.resize(size, Image.BILINEAR), np.uint8)


def _patch(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
  h, w = background.shape
  tops = rng.integers(0, h - PATCH + 1, PATCH_TRIES)
  lefts = rng.integers(0, w - PATCH + 1, PATCH_TRIES)
  patches = [background[t:t + PATCH, l:l + PATCH] for t, l in zip(tops, lefts)]
  stds = [p.std() for p in patches]
  textured = [i for i, s in enumerate(stds) if s >= MIN_PATCH_STD]
  return patches[textured[0] if textured else int(np.argmax(stds))]


def _rotate(digit: np.ndarray, degrees: float) -> np.ndarray:
  from PIL import Image
  return np.asarray(Image.fromarray(digit).rotate(degrees, resample=Image.BILINEAR), np.uint8)


def compose(digits: np.ndarray, backgrounds: Sequence[np.ndarray], split: str,
            rotated: bool = False, start: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Digits [n, 28, 28] uint8 (examples start .. start+n-1 of `split`) over patches of
  `backgrounds` (that split's images) -> (images [n, 28, 28] uint8, background index
  [n]). The digit's intensity is its opacity: out = d + (1 - d/255) * background, so
  strokes stay white and the patch shows between them."""
  images = np.empty_like(digits)
  which = np.empty(len(digits), np.int32)
  for i, digit in enumerate(digits):
    rng = np.random.default_rng([SEED, SPLITS[split], start + i])
    which[i] = rng.integers(len(backgrounds))
    patch = _patch(rng, backgrounds[which[i]]).astype(np.float32)
    angle = rng.uniform(0.0, 360.0)   # drawn always: both variants share the backgrounds
    d = (_rotate(digit, angle) if rotated else digit).astype(np.float32)
    images[i] = np.rint(d + (1.0 - d / 255.0) * patch).astype(np.uint8)
  return images, which


def write_idx(path: str, array: np.ndarray) -> None:
  """A uint8 IDX file (magic 0x0000 08 ndim, big-endian dims), as mnist.read_idx reads."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with open(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def build(mnist_dir: str, backgrounds_dir: str, out_dir: str, rotated: bool) -> dict:
  """Compose both splits into `out_dir` (mnist.FILES' names, uncompressed) with a
  manifest.json (construction, source images per split, sha256 of every file)."""
  import PIL
  arrays = mnist.load_idx_dir(mnist_dir)
  files = background_files(backgrounds_dir)
  manifest = {"dataset": "mnist_back_image", "version": VERSION, "rotated": rotated,
              "seed": SEED, "background_side": BACKGROUND_SIDE,
              "min_patch_std": MIN_PATCH_STD, "patch_tries": PATCH_TRIES,
              "pillow": PIL.__version__, "mnist_dir": os.path.abspath(mnist_dir),
              "backgrounds_dir": os.path.abspath(backgrounds_dir),
              "background_files": files, "sha256": {}}
  for split in SPLITS:
    backgrounds = [load_background(os.path.join(backgrounds_dir, f)) for f in files[split]]
    images, which = compose(arrays[f"{split}_images"], backgrounds, split, rotated)
    np.save(os.path.join(out_dir, f"{split}-background-index.npy"), which)
    write_idx(os.path.join(out_dir, mnist.FILES[f"{split}_images"]), images)
    write_idx(os.path.join(out_dir, mnist.FILES[f"{split}_labels"]),
              arrays[f"{split}_labels"])
  for name in mnist.FILES.values():
    manifest["sha256"][name] = _sha256(os.path.join(out_dir, name))
  with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


def sources(config) -> Tuple[str, str]:
  """(MNIST IDX folder, backgrounds folder) of `config.data`, both checked to exist."""
  mnist_dir = config.mnist_dir or os.path.join(default_data_root(), "mnist")
  if not os.path.isdir(mnist_dir):
    raise DataError(f"MNIST-back-image needs the MNIST IDX files: {mnist_dir} is not a "
                    "folder. Set config.data.mnist_dir (or $BN_INCEPTION_DATA to a folder "
                    "with mnist/ and imagenet_sample/); it is never downloaded.")
  backgrounds_dir = config.backgrounds_dir or os.path.join(default_data_root(),
                                                          "imagenet_sample")
  background_files(backgrounds_dir)  # raises if missing or empty
  return mnist_dir, backgrounds_dir


def cache_folder(config) -> str:
  """<cache_dir>/mnist_back_image-v<VERSION>-<variant>-<key of the source folders>."""
  mnist_dir, backgrounds_dir = sources(config)
  key = hashlib.sha256(json.dumps([os.path.realpath(mnist_dir),
                                   os.path.realpath(backgrounds_dir)]).encode()).hexdigest()
  root = config.cache_dir or os.path.join(default_cache_root(), "mnist_back_image")
  return os.path.join(root, f"mnist_back_image-v{VERSION}-{config.variant}-{key[:12]}")


def ensure_built(config) -> str:
  """The cache folder of `config.data`, composed now if absent (into a temporary folder
  renamed into place, so a concurrent or interrupted build leaves no half folder)."""
  folder = cache_folder(config)
  if not os.path.isdir(folder):
    mnist_dir, backgrounds_dir = sources(config)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(folder))
    try:
      build(mnist_dir, backgrounds_dir, tmp, rotated=config.variant == "rotated")
      os.rename(tmp, folder)
    except OSError:
      if not os.path.isdir(folder):   # not another process's finished build: a real failure
        raise
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return folder


def check_built(folder: str) -> None:
  """DataError unless every IDX file in `folder` has its manifest's sha256."""
  with open(os.path.join(folder, "manifest.json")) as f:
    expected = json.load(f)["sha256"]
  bad = [name for name, digest in expected.items()
         if _sha256(os.path.join(folder, name)) != digest]
  if bad:
    raise DataError(f"MNIST-back-image cache {folder} is damaged ({', '.join(bad)} differ "
                    "from its manifest.json): delete the folder and it is rebuilt.")


def create(config) -> InMemorySource:
  """`config.data` (schema.mnist_back_image_data_config) -> the source, from its cache
  folder (composed there first if absent)."""
  folder = ensure_built(config)
  check_built(folder)
  arrays = mnist.load_idx_dir(folder)
  return InMemorySource(
      arrays["train_images"][..., None], arrays["train_labels"].astype(np.int32),
      arrays["test_images"][..., None], arrays["test_labels"].astype(np.int32),
      num_classes=10, mean=tuple(config.mean), std=tuple(config.std),
      shuffle=config.shuffle)
