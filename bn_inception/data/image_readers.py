"""Readers of encoded images (an image folder, a TFDS split) and, beside each, the
full-size image set that wraps it for multi-crop evaluation.

* `FolderReader` (<dir>/<synset>/<image>, listed by `list_image_folder`) and
  `ArrayRecordReader` (a TFDS split prepared as ArrayRecord) give random access;
  `EncodedImageSet` wraps either; `undecodable` finds the images of either that do
  not decode (the one search, for training, evaluation and image sets).
* A TFDS split prepared as TFRecord is read in file order (`parse_record`);
  `TfRecordImageSet` reads it so.

TensorFlow is imported only where an image is decoded or a record parsed.
"""

from __future__ import annotations

import os
import threading
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
  """Random access to an ArrayRecord split of tf.Example records {image: encoded bytes,
  label: int64[, file_name: bytes]}: a TFDS split prepared as ArrayRecord, or
  scripts/prepare_imagenet.py's output.

  `fetch` reads each shard's records with one array_record call and parses them with
  protobuf's C++ parser, about 20 us an image on this project's CPU host; TFDS's
  data source (a new thread pool per call, Python deserialisation) took 55 us, on the
  one thread that feeds the pipeline (docs/data.md, Measured throughput).
  """

  READER_OPTIONS = "readahead_buffer_size:0"  # random access: no read-ahead

  def __init__(self, files: Sequence[str], lengths: Sequence[int], where: str):
    if len(files) != len(lengths):
      raise DataError(f"{where}: {len(files)} shard files but {len(lengths)} shard lengths.")
    self.files = [os.fspath(f) for f in files]
    self.starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    self.where = where
    self.bad: Dict[int, str] = {}
    self._readers: List = [None] * len(self.files)
    self._lock = threading.Lock()

  def __len__(self):
    return int(self.starts[-1])

  def _reader(self, shard: int):
    """Shard `shard`'s reader, opened on first use; its record count is checked."""
    with self._lock:
      if self._readers[shard] is None:
        from array_record.python import array_record_module
        path = self.files[shard]
        try:
          reader = array_record_module.ArrayRecordReader(path, self.READER_OPTIONS)
        except Exception as e:  # a missing or unreadable file: one message
          raise DataError(f"Could not open shard {path} of {self.where}: {e}") from e
        expected = int(self.starts[shard + 1] - self.starts[shard])
        if reader.num_records() != expected:
          raise DataError(f"Shard {path} of {self.where} holds {reader.num_records()} "
                          f"records; the dataset's info says {expected}.")
        self._readers[shard] = reader
      return self._readers[shard]

  def records(self, indices) -> List[bytes]:
    """The serialized records at `indices`, in that order."""
    indices = np.asarray(indices, np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"{self.where} has {len(self)} records; asked for "
                       f"{indices.min()}..{indices.max()}.")
    shards = np.searchsorted(self.starts, indices, side="right") - 1
    out: List[bytes] = [b""] * len(indices)
    for shard in np.unique(shards):
      rows = np.flatnonzero(shards == shard)
      positions = (indices[rows] - self.starts[shard]).tolist()
      for row, record in zip(rows, self._reader(int(shard)).read(positions)):
        out[row] = record
    return out

  def _features(self, index: int, record: bytes):
    from tensorflow.core.example import example_pb2
    try:
      features = example_pb2.Example.FromString(record).features.feature
    except Exception as e:  # protobuf's DecodeError: one message
      raise DataError(f"Record {index} of {self.where} is not a tf.Example ({e}).") from e
    if "image" not in features or "label" not in features:
      raise DataError(f"Record {index} of {self.where} is not a tf.Example with 'image' "
                      f"and 'label' features (it has {sorted(features)}).")
    return features

  def fetch(self, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    images = np.empty(len(indices), dtype=object)
    labels = np.empty(len(indices), np.int32)
    for k, (i, record) in enumerate(zip(indices, self.records(indices))):
      features = self._features(int(i), record)
      images[k] = features["image"].bytes_list.value[0]
      labels[k] = features["label"].int64_list.value[0]
    return images, labels

  def record(self, index: int) -> Dict[str, object]:
    """Record `index` as {"image": bytes, "label": int, "file_name": bytes (b"" if none)}."""
    features = self._features(int(index), self.records([index])[0])
    file_name = features["file_name"].bytes_list.value if "file_name" in features else []
    return {"image": features["image"].bytes_list.value[0],
            "label": int(features["label"].int64_list.value[0]),
            "file_name": file_name[0] if file_name else b""}

  def name(self, index: int) -> str:
    file_name = self.record(index)["file_name"].decode(errors="replace")
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
