"""MNIST from the original IDX files (gzip or not), with a TFDS fallback."""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from bn_inception.data.base import DataError, InMemorySource

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_HOW_TO_POINT = ("Point --config.data.data_dir at a folder holding the four MNIST IDX "
                 "files (train-images-idx3-ubyte[.gz], ...), or set $BN_INCEPTION_DATA "
                 "to a folder with an mnist/ subfolder.")


def read_idx(path: str) -> np.ndarray:
  """Parse one IDX file (magic 0x0000 08 ndim, big-endian dims, uint8 data)."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:  # missing, truncated, garbled gzip
    raise DataError(f"MNIST file {path} could not be read ({e}). {_HOW_TO_POINT}") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise DataError(f"MNIST file {path} is not a uint8 IDX file (bad magic number). "
                    f"{_HOW_TO_POINT}")
  ndim = data[3]
  header = 4 + 4 * ndim
  dims = struct.unpack(">" + "I" * ndim, data[4:header])
  expected = int(np.prod(dims))
  if len(data) - header != expected:
    raise DataError(f"MNIST file {path} is truncated or malformed: header says "
                    f"{dims} ({expected} bytes), file has {len(data) - header}. "
                    f"{_HOW_TO_POINT}")
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find(data_dir: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem):
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      return path
  return None


def load_idx_dir(data_dir: str):
  paths = {key: _find(data_dir, stem) for key, stem in FILES.items()}
  missing = [FILES[k] for k, p in paths.items() if p is None]
  if missing:
    raise DataError(f"MNIST not found in {os.path.abspath(data_dir)}: missing "
                    f"{', '.join(m + '[.gz]' for m in missing)}. {_HOW_TO_POINT}")
  arrays = {key: read_idx(path) for key, path in paths.items()}
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise DataError(f"MNIST {split} files in {data_dir} disagree: images "
                      f"{images.shape}, labels {labels.shape}. {_HOW_TO_POINT}")
    if labels.max() > 9:
      raise DataError(f"MNIST {split} labels in {data_dir} exceed 9. {_HOW_TO_POINT}")
  return arrays


def load_tfds(data_dir: str | None):
  import tensorflow_datasets as tfds
  out = {}
  for split, key in (("train", "train"), ("test", "test")):
    ds = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1, data_dir=data_dir))
    out[f"{key}_images"] = ds["image"][..., 0]
    out[f"{key}_labels"] = ds["label"]
  return out


def create(config) -> InMemorySource:
  """`config.data` (see schema.mnist_data_config) -> the MNIST source."""
  data_dir = config.data_dir
  if os.path.isdir(data_dir) or not config.download_if_missing:
    arrays = load_idx_dir(data_dir)
  else:
    print(f"MNIST IDX files not found at {os.path.abspath(data_dir)}; falling back to "
          f"the standard tfds download of 'mnist' (needs network). {_HOW_TO_POINT}",
          flush=True)
    try:
      arrays = load_tfds(config.tfds_data_dir or None)
    except Exception as e:  # tfds raises many kinds; one message is what matters.
      raise DataError(f"MNIST not found at {os.path.abspath(data_dir)} and the tfds "
                      f"download failed ({type(e).__name__}: {str(e)[:200]}). "
                      f"{_HOW_TO_POINT}") from e
  def as_nhwc(images):
    return images[..., None]  # (N, 28, 28, 1)
  return InMemorySource(
      as_nhwc(arrays["train_images"]), arrays["train_labels"].astype(np.int32),
      as_nhwc(arrays["test_images"]), arrays["test_labels"].astype(np.int32),
      num_classes=10, mean=tuple(config.mean), std=tuple(config.std),
      shuffle=config.shuffle)
