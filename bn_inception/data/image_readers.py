"""Readers of encoded images (an image folder, a TFDS split) and, beside each, the
full-size image set that wraps it for multi-crop evaluation.

* `FolderReader` (<dir>/<synset>/<image>, listed by `list_image_folder`) and
  `ArrayRecordReader` (a TFDS split prepared as ArrayRecord) give random access;
  `EncodedImageSet` wraps either; `undecodable` finds the images of either that do
  not decode (the one search, for training, evaluation and image sets).
* A TFDS split prepared as TFRecord is read in file order (`parse_record`);
  `TfRecordImageSet` reads it so.

TensorFlow is imported only where an image is decoded.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from bn_inception.data.base import DataError, ImageSet
from bn_inception.schema import default_data_root

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


class FolderReader:
  """Random access to the files of an image folder: `fetch` gives paths, `load` reads."""

  def __init__(self, paths: Sequence[str], labels: np.ndarray, where: str):
    self.paths = np.asarray(paths, dtype=object)
    self.labels = np.asarray(labels, np.int32)
    self.where = where
    self.bad: Dict[int, str] = {}

  def __len__(self):
    return len(self.paths)

  def fetch(self, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    paths = np.asarray([p.encode() for p in self.paths[indices]], dtype=object)
    return paths, self.labels[indices]

  def name(self, index: int) -> str:
    return str(self.paths[index])

  @staticmethod
  def load(payload):
    """A fetched payload -> the encoded image (TF op): the file's contents."""
    import tensorflow as tf
    return tf.io.read_file(payload)


class ArrayRecordReader:
  """Random access to a TFDS split prepared as ArrayRecord (encoded JPEG bytes)."""

  def __init__(self, data_source, where: str):
    self.source = data_source
    self.where = where
    self.bad: Dict[int, str] = {}

  def __len__(self):
    return len(self.source)

  def fetch(self, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in indices])
    return (np.asarray([r["image"] for r in records], dtype=object),
            np.asarray([r["label"] for r in records], np.int32))

  def name(self, index: int) -> str:
    record = self.source[int(index)]
    file_name = record.get("file_name", b"")
    file_name = file_name.decode() if isinstance(file_name, bytes) else str(file_name)
    return f"{self.where}[{index}] ({file_name})"

  @staticmethod
  def load(payload):
    """A fetched payload -> the encoded image: the payload itself."""
    return payload


def list_image_folder(root: str, field: str) -> Tuple[List[str], List[str], List[str]]:
  """(paths, their class folder names, sorted class folder names) of <root>/<class>/*."""
  if not os.path.isdir(root):
    raise DataError(f"ImageNet folder {os.path.abspath(root)} does not exist. Set "
                    f"config.data.{field} to a folder laid out as <dir>/<synset>/<image>.JPEG "
                    f"(e.g. {os.path.join(default_data_root(), 'imagenet_sample')}).")
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
  paths, owners = [], []
  for cls in classes:
    files = sorted(e.name for e in os.scandir(os.path.join(root, cls))
                   if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
    paths += [os.path.join(root, cls, f) for f in files]
    owners += [cls] * len(files)
  if not paths:
    raise DataError(f"No images ({'/'.join(IMAGE_EXTENSIONS)}, any case) in class folders "
                    f"under {os.path.abspath(root)} (config.data.{field}); expected "
                    f"<dir>/<synset>/<image>.JPEG.")
  return paths, owners, sorted(set(owners))


# --------------------------------------------------------------------------- image sets


def parse_record(record):
  """A TFDS image-classification tf.Example -> (encoded image, int32 label)."""
  import tensorflow as tf
  features = tf.io.parse_single_example(record, {
      "image": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64)})
  return features["image"], tf.cast(features["label"], tf.int32)


def decode_image(data):
  """Encoded bytes -> uint8 [h, w, 3] (TF op)."""
  import tensorflow as tf
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_error(decode: Callable, data) -> Optional[str]:
  """"ErrorType: message" where `decode(data)`, run eagerly, fails; None where it works."""
  import tensorflow as tf
  try:
    decode(data)
  except tf.errors.OpError as e:
    return f"{type(e).__name__}: {e.message}"
  return None


def undecodable(reader, indices, decode: Callable = decode_image) -> Iterator[Tuple[int, str]]:
  """(index, "ErrorType: message") for each of `indices` of a random-access reader, in
  order, whose image cannot be loaded or `decode(encoded image)`d. Lazy: the first
  costs only the images before it."""
  for i in indices:
    payload, _ = reader.fetch(np.asarray([i]))
    error = decode_error(lambda p: decode(reader.load(p)), payload[0])
    if error is not None:
      yield int(i), error


class EncodedImageSet(ImageSet):
  """Encoded images with random access: an ImageNet FolderReader or ArrayRecordReader."""

  CHUNK = 256  # examples fetched from the reader at a time

  def __init__(self, reader, name: str):
    self.reader, self.name = reader, name
    self.num_examples, self.channels = len(reader), 3

  def dataset(self, indices, num_parallel_calls):
    import tensorflow as tf
    indices = np.asarray(indices, np.int64)

    def examples() -> Iterator:
      for start in range(0, len(indices), self.CHUNK):
        payload, labels = self.reader.fetch(indices[start:start + self.CHUNK])
        yield from zip(payload, labels)

    ds = tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)))
    return ds.map(lambda p, label: {"image": decode_image(self.reader.load(p)),
                                    "label": label},
                  num_parallel_calls=num_parallel_calls, deterministic=True)

  def find_undecodable(self, indices):
    for i, error in undecodable(self.reader, indices):
      return f"{self.reader.name(i)} ({error[:200]})"
    return None


class TfRecordImageSet(ImageSet):
  """A TFDS split prepared as TFRecord, read in file order (positions = record order)."""

  def __init__(self, files: Sequence[str], num_examples: int, name: str):
    self.files, self.num_examples, self.name, self.channels = list(files), num_examples, name, 3

  def _records(self):
    import tensorflow as tf
    return tf.data.TFRecordDataset(self.files).map(parse_record)

  def dataset(self, indices, num_parallel_calls):
    indices = np.asarray(indices, np.int64)
    step = int(indices[1] - indices[0]) if len(indices) > 1 else 1
    if len(indices) and not np.array_equal(indices, indices[0] + step * np.arange(len(indices))):
      raise ValueError("A streamed TFRecord split is read at evenly spaced positions only.")
    first = int(indices[0]) if len(indices) else 0
    ds = self._records().skip(first).shard(step, 0).take(len(indices))
    return ds.map(lambda data, label: {"image": decode_image(data), "label": label},
                  num_parallel_calls=num_parallel_calls, deterministic=True)

  def find_undecodable(self, indices):
    wanted = set(int(i) for i in indices)
    for position, (data, _) in enumerate(self._records().as_numpy_iterator()):
      error = decode_error(decode_image, data) if position in wanted else None
      if error is not None:
        return f"{self.name} record {position} ({error[:200]})"
      if position >= max(wanted, default=-1):
        break
    return None
