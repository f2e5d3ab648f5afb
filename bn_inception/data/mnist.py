"""MNIST from the original IDX files (gzip or not), with a TFDS fallback."""

from __future__ import annotations

import gzip
import os
import struct
import zlib

from absl import logging
import numpy as np

from bn_inception.data.base import DataError
from bn_inception.data.in_memory import InMemorySource
from bn_inception.schema import default_data_root

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


# Where tfds downloads MNIST from (tfds' mnist builder: its _MNIST_URL host).
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 3.0


def reachable(host_port=None, timeout: float = None) -> bool:
  """Whether a TCP connection to `host_port` opens within `timeout` seconds
  (name lookup included: it runs in a thread, since it has no timeout of its own)."""
  import socket
  import threading
  host, port = host_port or DOWNLOAD_HOST
  timeout = PROBE_TIMEOUT_S if timeout is None else timeout
  result = []

  def probe():
    try:
      with socket.create_connection((host, port), timeout=timeout):
        result.append(True)
    except OSError:
      pass
  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result)


def load_tfds(data_dir: str | None):
  import tensorflow_datasets as tfds
  out = {}
  for split, key in (("train", "train"), ("test", "test")):
    ds = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1, data_dir=data_dir))
    out[f"{key}_images"] = ds["image"][..., 0]
    out[f"{key}_labels"] = ds["label"]
  return out


def resolve_data_dir(data_dir: str) -> str | None:
  """The IDX folder to read: `data_dir` when set (it must be a folder: a typo fails
  here, at once); when unset (""), <default data root>/mnist if it is a folder, else
  None (the tfds fallback)."""
  if data_dir:
    if not os.path.isdir(data_dir):
      what = "is a file, not a folder" if os.path.exists(data_dir) else "does not exist"
      raise DataError(f"config.data.data_dir={data_dir} {what}. {_HOW_TO_POINT} Leave "
                      f"data_dir unset (\"\") to use the default folder or the download.")
    return data_dir
  default = os.path.join(default_data_root(), "mnist")
  return default if os.path.isdir(default) else None


def download(config):
  """The arrays from the tfds download, where no IDX folder is set or found. Refused
  (DataError) when config.data.download_if_missing is False, and when the download
  host is unreachable: checked first, since tfds would retry for minutes and create
  its data folder."""
  default = os.path.join(default_data_root(), "mnist")
  if not config.download_if_missing:
    raise DataError(f"MNIST not found: config.data.data_dir is unset and the default "
                    f"folder {os.path.abspath(default)} does not exist "
                    f"(download_if_missing=False). {_HOW_TO_POINT}")
  host, port = DOWNLOAD_HOST
  if not reachable():
    raise DataError(f"MNIST not found in the default folder {os.path.abspath(default)}, "
                    f"and the tfds download host {host}:{port} is unreachable (no "
                    f"network?). {_HOW_TO_POINT}")
  logging.warning("MNIST IDX files not found at %s; falling back to the standard tfds "
                  "download of 'mnist'. %s", os.path.abspath(default), _HOW_TO_POINT)
  try:
    return load_tfds(config.tfds_data_dir or None)
  except Exception as e:  # tfds raises many kinds; one message is what matters.
    raise DataError(f"MNIST not found at {os.path.abspath(default)} and the tfds "
                    f"download failed ({type(e).__name__}: {str(e)[:200]}). "
                    f"{_HOW_TO_POINT}") from e


def create(config) -> InMemorySource:
  """`config.data` (see schema.mnist_data_config) -> the MNIST source: the IDX files,
  else the tfds download (`download`)."""
  data_dir = resolve_data_dir(config.data_dir)
  arrays = load_idx_dir(data_dir) if data_dir is not None else download(config)

  def as_nhwc(images):
    return images[..., None]  # (N, 28, 28, 1)
  return InMemorySource(
      as_nhwc(arrays["train_images"]), arrays["train_labels"].astype(np.int32),
      as_nhwc(arrays["test_images"]), arrays["test_labels"].astype(np.int32),
      num_classes=10, mean=tuple(config.mean), std=tuple(config.std),
      shuffle=config.shuffle)
