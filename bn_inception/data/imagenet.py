"""ImageNet (ILSVRC-2012) behind the DataSource interface: an image folder or TFDS.

Two sources, one contract (see data/base.py): host-local uint8 NHWC batches of
this process's slice of the global batch, normalised on device.

* `imagenet_folder`: `<dir>/<synset>/*.{JPEG,jpg,png}`; labels are the sorted
  synset order (n01440764 = 0, the ILSVRC-2012 / TFDS order when all 1000
  synsets are present).
* `imagenet_tfds`: a prepared TFDS `imagenet2012` under `data.tfds_data_dir`
  (never downloaded here). Prepared as ArrayRecord it is read by random access,
  exactly like the folder; prepared as TFRecord (the TFDS default) it is
  streamed (see TfdsStreamingSource for what that guarantees on resume).

Training order. With random access (folder, ArrayRecord) step s reads the
examples EpochSampler(seed).indices(s) -- epoch-wise permutations, so the
sampler already shuffles globally and `data.shuffle_buffer` is unused -- and
each example's crop/flip/colour randomness is seeded by (seed, its position in
the global stream). A run resumed at step s, on any number of processes, sees
exactly the batches of the uninterrupted run.

Normalisation: (x/255 - data.mean) / data.std on device, ImageNet mean/std by
default; Inception's [-1, 1] scaling is data.mean = data.std = (0.5, 0.5, 0.5).
"""

from __future__ import annotations

import math
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from bn_inception.data import augment, device_augment
from bn_inception.data.base import Batch, DataError, DataSource, EpochSampler, process_slice
from bn_inception.schema import default_data_root

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
# --------------------------------------------------------------------------- readers


class FolderReader:
  """Random access to the files of an image folder."""

  payload = "path"  # the pipeline reads the file

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


class ArrayRecordReader:
  """Random access to a TFDS split prepared as ArrayRecord (encoded JPEG bytes)."""

  payload = "bytes"

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


# --------------------------------------------------------------------------- pipeline


def _options(config) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = True
  return options


def _parallel(config) -> int:
  return tf.data.AUTOTUNE if config.num_parallel_calls < 0 else config.num_parallel_calls


def _prefetch(config) -> int:
  return tf.data.AUTOTUNE if config.prefetch_batches < 0 else config.prefetch_batches


def _decoded_batches(generator, local: int, extra_dtype, example: Callable, config):
  """(payload, label, extra) host batches -> examples decoded in parallel, in order,
  re-batched and prefetched."""
  ds = tf.data.Dataset.from_generator(generator, output_signature=(
      tf.TensorSpec([local], tf.string), tf.TensorSpec([local], tf.int32),
      tf.TensorSpec([local], extra_dtype)))
  ds = ds.unbatch().map(example, num_parallel_calls=_parallel(config), deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(_prefetch(config))
  return ds.with_options(_options(config))


def _validate(config):
  s = config.distortion_strength
  if not 0.0 <= s <= 1.0:
    raise ValueError(f"config.data.distortion_strength={s} must be in [0, 1].")
  lo, hi = config.crop_area_range
  if not 0 < lo <= hi <= 1:
    raise ValueError(f"config.data.crop_area_range={tuple(config.crop_area_range)} must "
                     f"satisfy 0 < low <= high <= 1.")
  lo, hi = config.aspect_ratio_range
  if not 0 < lo <= hi:
    raise ValueError(f"config.data.aspect_ratio_range={tuple(config.aspect_ratio_range)} "
                     f"must satisfy 0 < low <= high.")
  if not 0 < config.eval_crop_fraction <= 1:
    raise ValueError(f"config.data.eval_crop_fraction={config.eval_crop_fraction} must "
                     f"be in (0, 1].")
  if config.image_size < 1:
    raise ValueError(f"config.data.image_size={config.image_size} must be positive.")
  if len(config.mean) != 3 or len(config.std) != 3:
    raise ValueError("config.data.mean and config.data.std need 3 (RGB) values.")


def distorts_on_device(config) -> bool:
  return config.distort_on_device and config.distortion_strength > 0


def train_image_fn(config) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """(encoded image, int64 seed[2]) -> augmented uint8 image, from config.data
  (colour distortion left to the device when config.distort_on_device)."""
  host_strength = 0.0 if distorts_on_device(config) else config.distortion_strength

  def fn(data, seed):
    return augment.train_image(
        data, seed, image_size=config.image_size,
        area_range=tuple(config.crop_area_range),
        aspect_ratio_range=tuple(config.aspect_ratio_range),
        min_object_covered=config.crop_min_object_covered,
        max_attempts=config.crop_max_attempts, random_flip=config.random_flip,
        distortion_strength=host_strength,
        resize_method=config.resize_method, antialias=config.antialias)
  return fn


def eval_image_fn(config) -> Callable[[tf.Tensor], tf.Tensor]:
  def fn(data):
    return augment.eval_image(data, image_size=config.image_size,
                              crop_fraction=config.eval_crop_fraction,
                              resize_method=config.resize_method, antialias=config.antialias)
  return fn


def _substitute(indices: np.ndarray, bad: Dict[int, str], n: int) -> np.ndarray:
  """Each known-undecodable index -> the next decodable one (a fixed rule: resumable)."""
  if not bad:
    return indices
  out = indices.copy()
  for k, i in enumerate(indices):
    j = int(i)
    while j in bad:
      j = (j + 1) % n
      if j == i:
        raise DataError("No decodable image is left in the dataset.")
    out[k] = j
  return out


class _RecoveringIterator:
  """Iterate a tf.data pipeline over units (steps or eval batches); on a failure find
  the undecodable images of the failing unit, raise or record them, and rebuild
  the pipeline from that unit."""

  def __init__(self, reader, build: Callable[[int], tf.data.Dataset],
               check: Callable[[int], Dict[int, str]], skip_corrupt: bool, what: str):
    self.reader, self.build, self.check = reader, build, check
    self.skip_corrupt, self.what = skip_corrupt, what

  def __call__(self, first: int, last: Optional[int] = None) -> Iterator[Batch]:
    unit = first
    while last is None or unit < last:
      try:
        for batch in self.build(unit).as_numpy_iterator():
          yield batch
          unit += 1
        return
      except Exception as e:  # not BaseException: a generator closed at exit
        if not isinstance(e, tf.errors.OpError):
          raise
        found = self.check(unit)
        if not found:
          raise DataError(f"The ImageNet input pipeline failed at {self.what} {unit} "
                          f"({type(e).__name__}: {str(e)[:300]}).") from e
        if not self.skip_corrupt:
          index, msg = next(iter(found.items()))
          raise DataError(
              f"Could not decode image {self.reader.name(index)} ({msg[:200]}). Remove "
              f"or replace the file, or set config.data.skip_corrupt_images=True to "
              f"replace undecodable training images deterministically and mask them "
              f"out of evaluation.") from e
        for index, msg in found.items():
          self.reader.bad[index] = msg
          logging.warning("Skipping undecodable image %s (%s); %d skipped in %s so far.",
                          self.reader.name(index), msg[:200], len(self.reader.bad),
                          self.reader.where)


def _undecodable(reader, indices: np.ndarray, decode: Callable[[tf.Tensor], tf.Tensor]):
  """{index: error} for the examples among `indices` that fail to load or decode."""
  found = {}
  for i in np.unique(indices):
    if int(i) in reader.bad:
      continue
    payload, _ = reader.fetch(np.asarray([i]))
    try:
      data = tf.io.read_file(payload[0]) if reader.payload == "path" else payload[0]
      decode(data)
    except tf.errors.OpError as e:
      found[int(i)] = f"{type(e).__name__}: {e.message}"
  return found


class _ImageNetSource(DataSource):
  """What both ImageNet sources share: config, image functions, device distortion."""

  def __init__(self, config, num_classes: int):
    _validate(config)
    self.config = config
    self.num_classes = num_classes
    self.image_shape = (config.image_size, config.image_size, 3)
    self.mean, self.std = tuple(config.mean), tuple(config.std)
    self._train_image = train_image_fn(config)
    self._eval_image = eval_image_fn(config)
    self._device_distortion = distorts_on_device(config)
    self.train_extras = ({device_augment.COLOR_SEED: ((2,), np.uint32)}
                         if self._device_distortion else {})

  def _train_example(self, data, label, example_seed):
    """One training example from its encoded image and its int64 seed[2]."""
    out = {"image": self._train_image(data, example_seed), "label": label}
    if self._device_distortion:
      out[device_augment.COLOR_SEED] = augment.color_seed(example_seed)
    return out

  def train_inputs(self, batch):
    images = batch["image"]
    if self._device_distortion:
      images = device_augment.distort_color(images, batch[device_augment.COLOR_SEED],
                                            self.config.distortion_strength)
    return self.normalize(images)


def without_files(config, num_classes: int = 1000) -> DataSource:
  """The ImageNet source's shape and on-device work (`train_inputs`) without its
  files: what a benchmark on synthetic batches needs where the data is absent."""
  return _ImageNetSource(config, num_classes)


class RandomAccessImageSource(_ImageNetSource):
  """Encoded images with random access (folder, ArrayRecord): exact (seed, step) order."""

  def __init__(self, train: FolderReader | ArrayRecordReader,
               eval_: FolderReader | ArrayRecordReader, num_classes: int, config):
    super().__init__(config, num_classes)
    self.train_reader, self.eval_reader = train, eval_
    self.num_train_examples = len(train)
    self.num_eval_examples = len(eval_)

  def full_size_images(self, split):
    from bn_inception.data.multicrop import EncodedImageSet
    reader = self.eval_reader if split == "eval" else self.train_reader
    return EncodedImageSet(reader, reader.where)

  @property
  def num_skipped_images(self) -> int:
    """Undecodable images met so far (replaced in training, masked in evaluation)."""
    return len(self.train_reader.bad) + (
        len(self.eval_reader.bad) if self.eval_reader is not self.train_reader else 0)

  def _load(self, reader):
    if reader.payload == "path":
      return tf.io.read_file
    return lambda x: x

  # -- training
  def _train_indices(self, sampler, step, global_batch, mine):
    idx = sampler.indices(step, global_batch)[mine]
    return _substitute(idx, self.train_reader.bad, self.num_train_examples)

  def train_batches(self, start_step, global_batch, seed, process_index=0, process_count=1):
    config, reader = self.config, self.train_reader
    sampler = EpochSampler(self.num_train_examples, seed, config.shuffle)
    mine = process_slice(global_batch, process_index, process_count)
    local = mine.stop - mine.start
    load, image_fn = self._load(reader), self._train_image

    def steps(first):
      step = first
      while True:
        payload, labels = reader.fetch(self._train_indices(sampler, step, global_batch, mine))
        positions = step * global_batch + np.arange(mine.start, mine.stop, dtype=np.int64)
        yield payload, labels, positions
        step += 1

    def example(payload, label, position):
      # The augmentation of an example is a function of (seed, its stream position).
      example_seed = tf.stack([tf.constant(seed, tf.int64), position])
      return self._train_example(load(payload), label, example_seed)

    def build(first):
      return _decoded_batches(lambda: steps(first), local, tf.int64, example, config)

    def check(step):
      idx = self._train_indices(sampler, step, global_batch, mine)
      positions = step * global_batch + np.arange(mine.start, mine.stop, dtype=np.int64)
      found = {}
      for i, pos in zip(idx, positions):
        if int(i) not in found:
          found.update(_undecodable(reader, np.asarray([i]), lambda d, pos=pos: image_fn(
              d, tf.constant([seed, pos], tf.int64))))
      return found

    yield from _RecoveringIterator(reader, build, check, config.skip_corrupt_images,
                                   "training step")(start_step)

  # -- evaluation
  def _eval_indices(self, b, global_batch, mine):
    n = self.num_eval_examples
    idx = b * global_batch + np.arange(mine.start, mine.stop, dtype=np.int64)
    valid = idx < n
    if self.eval_reader.bad:
      valid &= ~np.isin(idx, list(self.eval_reader.bad))
    return np.where(valid, idx, 0), valid

  def eval_batches(self, global_batch, process_index=0, process_count=1):
    config, reader = self.config, self.eval_reader
    mine = process_slice(global_batch, process_index, process_count)
    local = mine.stop - mine.start
    num_batches = math.ceil(self.num_eval_examples / global_batch)
    load, image_fn, size = self._load(reader), self._eval_image, config.image_size

    def batches(first):
      for b in range(first, num_batches):
        idx, valid = self._eval_indices(b, global_batch, mine)
        payload, labels = reader.fetch(idx)
        payload = np.where(valid, payload, b"")  # padding and skipped images: not read
        yield payload, np.where(valid, labels, 0).astype(np.int32), valid

    def example(payload, label, valid):
      image = tf.cond(valid, lambda: image_fn(load(payload)),
                      lambda: tf.zeros([size, size, 3], tf.uint8))
      return {"image": image, "label": label, "mask": valid}

    def build(first):
      return _decoded_batches(lambda: batches(first), local, tf.bool, example, config)

    def check(b):
      idx, valid = self._eval_indices(b, global_batch, mine)
      return _undecodable(reader, idx[valid], image_fn)

    yield from _RecoveringIterator(reader, build, check, config.skip_corrupt_images,
                                   "eval batch")(0, num_batches)


# --------------------------------------------------------------------------- TFDS streaming


class TfdsStreamingSource(_ImageNetSource):
  """TFDS imagenet2012 prepared as TFRecord: streamed, deterministic, resumable.

  Process p reads the shards k with k % process_count == p. Epoch e of its
  stream = its shards in an order shuffled by (seed, e), interleaved record by
  record, then shuffled in a `data.shuffle_buffer` window seeded by (seed, e)
  (the paper's within-shard shuffling, Sec. 4.2.1). Augmentation randomness is
  seeded by (seed, process, stream position). Resuming at step s rebuilds the
  same stream and skips to position s * local_batch inside its epoch: the
  batches are identical to the uninterrupted run's (same TF version, shards and
  process count), but the skip reads (does not decode) up to one epoch of
  records. Prepare the data as ArrayRecord for instant, exact random access.
  Evaluation reads the split in file order, every example exactly once; an
  undecodable record there is always a DataError (skipping would break the
  padding contract; TFDS re-encodes ImageNet's CMYK and PNG files when preparing).
  """

  def __init__(self, builder, config, num_classes: int):
    super().__init__(config, num_classes)
    self.builder = builder
    self.train_info = builder.info.splits[config.train_split]
    self.eval_info = builder.info.splits[config.eval_split]
    self.num_train_examples = self.train_info.num_examples
    self.num_eval_examples = self.eval_info.num_examples

  def full_size_images(self, split):
    from bn_inception.data.multicrop import TfRecordImageSet
    info = self.eval_info if split == "eval" else self.train_info
    return TfRecordImageSet([str(p) for p in info.filepaths], info.num_examples,
                            f"{self.config.tfds_name}/{info.name}")

  @property
  def num_skipped_images(self) -> int:
    return 0  # dropped by ignore_errors, not counted on this path

  @staticmethod
  def _parse(record):
    features = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64)})
    return features["image"], tf.cast(features["label"], tf.int32)

  def _fail(self, e, what):
    return DataError(
        f"An image of TFDS {self.config.tfds_name} ({what}) could not be decoded "
        f"({type(e).__name__}: {str(e)[:200]}). Set config.data.skip_corrupt_images=True "
        f"to drop undecodable records (the stream stays deterministic).")

  def train_batches(self, start_step, global_batch, seed, process_index=0, process_count=1):
    config = self.config
    mine = process_slice(global_batch, process_index, process_count)
    local = mine.stop - mine.start
    files = [str(p) for p in self.train_info.filepaths]
    lengths = list(self.train_info.shard_lengths)
    if len(files) < process_count:
      raise DataError(f"TFDS split {config.train_split} has {len(files)} shards, fewer "
                      f"than the {process_count} processes; prepare it as ArrayRecord.")
    my_files = files[process_index::process_count]
    epoch_length = sum(lengths[process_index::process_count])
    first = start_step * local
    first_epoch, skip = divmod(first, epoch_length)

    def epoch(e):
      epoch_seed = seed * 1_000_003 + e
      ds = tf.data.Dataset.from_tensor_slices(my_files)
      if config.shuffle:
        ds = ds.shuffle(len(my_files), seed=epoch_seed)
      ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(my_files)),
                         block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=True)
      if config.shuffle and config.shuffle_buffer > 1:
        ds = ds.shuffle(config.shuffle_buffer, seed=epoch_seed)
      return ds

    stream_seed = tf.constant([seed, 1 + process_index], tf.int64)

    def example(position, record):
      data, label = self._parse(record)
      example_seed = tf.random.experimental.stateless_fold_in(stream_seed, position)
      return self._train_example(data, label, example_seed)

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(first, 2**62), ds)
    ds = ds.map(example, num_parallel_calls=_parallel(config), deterministic=True)
    if config.skip_corrupt_images:
      ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(_prefetch(config))
    step = start_step
    try:
      for batch in ds.with_options(_options(config)).as_numpy_iterator():
        yield batch
        step += 1
    except Exception as e:  # not BaseException: a generator closed at exit
      if not isinstance(e, tf.errors.OpError):
        raise
      raise self._fail(e, f"split {config.train_split}, training step {step}") from e

  def eval_batches(self, global_batch, process_index=0, process_count=1):
    config = self.config
    mine = process_slice(global_batch, process_index, process_count)
    local, n = mine.stop - mine.start, self.num_eval_examples
    padded = math.ceil(n / global_batch) * global_batch
    size, image_fn = config.image_size, self._eval_image
    files = [str(p) for p in self.eval_info.filepaths]
    records = tf.data.TFRecordDataset(files).map(self._parse)
    records = records.map(lambda data, label: (data, label, True))
    padding = tf.data.Dataset.range(padded - n).map(
        lambda _: (tf.constant(b""), tf.constant(0, tf.int32), False))
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(padded), records.concatenate(padding))

    def is_mine(position, _):
      within = position % global_batch
      return (within >= mine.start) & (within < mine.stop)

    def example(position, item):
      data, label, valid = item
      image = tf.cond(valid, lambda: image_fn(data), lambda: tf.zeros([size, size, 3], tf.uint8))
      return {"image": image, "label": label, "mask": valid}

    ds = ds.filter(is_mine).map(example, num_parallel_calls=_parallel(config),
                                deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(_prefetch(config))
    try:
      yield from ds.with_options(_options(config)).as_numpy_iterator()
    except Exception as e:  # not BaseException: a generator closed at exit
      if not isinstance(e, tf.errors.OpError):
        raise
      raise self._fail(e, f"split {config.eval_split}") from e


# --------------------------------------------------------------------------- factory


def _tfds_prepare_help(data_dir: str, name: str) -> str:
  manual = os.path.join(data_dir, "downloads", "manual")
  return (f"Prepare it once (no download happens here): put ILSVRC2012_img_train.tar and "
          f"ILSVRC2012_img_val.tar (from https://image-net.org/download-images) into "
          f"{manual}, then run\n"
          f"  tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
          f"or in Python tfds.builder('{name}', data_dir='{data_dir}', "
          f"file_format='array_record').download_and_prepare(). ArrayRecord gives exact "
          f"random access (resume in O(1)); the default TFRecord is streamed. `tfds build` "
          f"shows its own progress bars (extracting the archives, then one per split as it "
          f"writes the examples; hours for the 1.28M training images). (Building "
          f"with tensorflow-datasets 4.9.10 also needs `pip install importlib_resources`.) "
          f"Or set "
          f"config.data.tfds_data_dir to where it is prepared.")


def create_folder(config) -> RandomAccessImageSource:
  """`imagenet_folder`: <train_dir>/<synset>/<image> (see imagenet_data_config)."""
  _validate(config)  # before listing a million files
  paths, owners, classes = list_image_folder(config.train_dir, "train_dir")
  label_of = {c: k for k, c in enumerate(classes)}
  labels = np.asarray([label_of[o] for o in owners], np.int32)
  if config.eval_dir:
    eval_paths, eval_owners, eval_classes = list_image_folder(config.eval_dir, "eval_dir")
    unknown = sorted(set(eval_classes) - set(classes))
    if unknown:
      raise DataError(f"config.data.eval_dir={config.eval_dir} has class folders not in "
                      f"config.data.train_dir={config.train_dir}: {unknown[:5]}"
                      f"{' ...' if len(unknown) > 5 else ''}; labels come from train_dir.")
    train = FolderReader(paths, labels, config.train_dir)
    eval_ = FolderReader(eval_paths, [label_of[o] for o in eval_owners], config.eval_dir)
  elif config.eval_fraction > 0:
    if not config.eval_fraction < 1:
      raise ValueError(f"config.data.eval_fraction={config.eval_fraction} must be in [0, 1).")
    order = np.random.default_rng(config.split_seed).permutation(len(paths))
    num_eval = max(1, round(config.eval_fraction * len(paths)))
    held, kept = np.sort(order[:num_eval]), np.sort(order[num_eval:])
    paths = np.asarray(paths, dtype=object)
    train = FolderReader(paths[kept], labels[kept], f"{config.train_dir} (train part)")
    eval_ = FolderReader(paths[held], labels[held], f"{config.train_dir} (held-out part)")
  else:  # evaluate on the training images themselves (overfitting checks)
    train = FolderReader(paths, labels, config.train_dir)
    eval_ = train
  return RandomAccessImageSource(train, eval_, len(classes), config)


def create_tfds(config) -> DataSource:
  """`imagenet_tfds`: a prepared TFDS dataset (see imagenet_data_config)."""
  _validate(config)
  data_dir = config.tfds_data_dir
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f"TFDS data dir {os.path.abspath(data_dir or '.')!s} "
                    f"(config.data.tfds_data_dir) does not exist. "
                    f"{_tfds_prepare_help(data_dir or '<data_dir>', config.tfds_name)}")
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(config.tfds_name, data_dir=data_dir)
  except Exception as e:  # unknown name or version: one message.
    raise DataError(f"TFDS could not open {config.tfds_name!r} in {data_dir} "
                    f"(config.data.tfds_name / tfds_data_dir): {e}") from e
  if not builder.is_prepared():
    raise DataError(f"TFDS {config.tfds_name} is not prepared in {data_dir} (no "
                    f"{builder.data_dir}/dataset_info.json; config.data.tfds_data_dir). "
                    f"{_tfds_prepare_help(data_dir, config.tfds_name)}")
  from bn_inception.data.shard_check import damaged_shards
  damage = damaged_shards(os.fspath(builder.data_dir))  # prepare_imagenet.py's checksums
  if damage:
    raise DataError(damage)
  for split in (config.train_split, config.eval_split):
    if split not in builder.info.splits:
      raise DataError(f"TFDS {config.tfds_name} in {data_dir} has no split {split!r} "
                      f"(config.data.train_split / eval_split); it has "
                      f"{sorted(builder.info.splits)}. {_tfds_prepare_help(data_dir, config.tfds_name)}")
  num_classes = builder.info.features["label"].num_classes
  fmt = builder.info.file_format
  if fmt is not None and fmt.value in ("array_record",):
    def reader(split):
      source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
      return ArrayRecordReader(source, f"{config.tfds_name}/{split}")
    return RandomAccessImageSource(reader(config.train_split), reader(config.eval_split),
                                   num_classes, config)
  logging.info("TFDS %s is prepared as %s: streaming it (resume skips within an epoch); "
               "prepare it as array_record for random access.", config.tfds_name, fmt)
  return TfdsStreamingSource(builder, config, num_classes)
