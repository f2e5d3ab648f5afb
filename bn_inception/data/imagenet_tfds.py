"""ImageNet from a prepared TFDS dataset (`imagenet_tfds`): `imagenet2012` under
`data.tfds_data_dir`, never downloaded here. Prepared as ArrayRecord it is read by
random access, exactly like the image folder (data/imagenet.py); prepared as
TFRecord (the TFDS default) it is streamed (`TfdsStreamingSource`, which says what
that guarantees on resume).
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np
import tensorflow as tf

from bn_inception.data import imagenet_pipeline as pipeline
from bn_inception.data.base import DataError, DataSource, eval_positions, process_slice
from bn_inception.data.image_readers import ArrayRecordReader, TfRecordImageSet, parse_record
from bn_inception.data.imagenet import RandomAccessImageSource
from bn_inception.data.shard_check import damaged_shards


class TfdsStreamingSource(pipeline.ImageNetSource):
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
    info = self.eval_info if split == "eval" else self.train_info
    return TfRecordImageSet([str(p) for p in info.filepaths], info.num_examples,
                            f"{self.config.tfds_name}/{info.name}")

  @property
  def num_skipped_images(self) -> int:
    return 0  # dropped by ignore_errors, not counted on this path

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
      data, label = parse_record(record)
      example_seed = tf.random.experimental.stateless_fold_in(stream_seed, position)
      return self._train_example(data, label, example_seed)

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(first, 2**62), ds)
    ds = ds.map(example, num_parallel_calls=pipeline.parallel(config), deterministic=True)
    if config.skip_corrupt_images:
      ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(pipeline.prefetch(config))
    step = start_step
    try:
      for batch in ds.with_options(pipeline.options(config)).as_numpy_iterator():
        yield batch
        step += 1
    except Exception as e:  # not BaseException: a generator closed at exit
      if not isinstance(e, tf.errors.OpError):
        raise
      raise self._fail(e, f"split {config.train_split}, training step {step}") from e

  def eval_batches(self, global_batch, process_index=0, process_count=1):
    config = self.config
    positions, mask = eval_positions(self.num_eval_examples, global_batch, process_index,
                                     process_count)
    # The split in file order: this process's records (the padding comes after them).
    mine = np.zeros(self.num_eval_examples, bool)
    mine[positions[mask]] = True
    size, image_fn = config.image_size, self._eval_image
    files = [str(p) for p in self.eval_info.filepaths]
    records = tf.data.TFRecordDataset(files).enumerate().filter(
        lambda position, _: tf.gather(mine, position))
    records = records.map(lambda _, record: (*parse_record(record), True))
    padding = tf.data.Dataset.range(int((~mask).sum())).map(
        lambda _: (tf.constant(b""), tf.constant(0, tf.int32), False))

    def example(data, label, valid):
      image = tf.cond(valid, lambda: image_fn(data), lambda: tf.zeros([size, size, 3], tf.uint8))
      return {"image": image, "label": label, "mask": valid}

    ds = records.concatenate(padding).map(example, num_parallel_calls=pipeline.parallel(config),
                                          deterministic=True)
    ds = ds.batch(mask.shape[1], drop_remainder=True).prefetch(pipeline.prefetch(config))
    try:
      yield from ds.with_options(pipeline.options(config)).as_numpy_iterator()
    except Exception as e:  # not BaseException: a generator closed at exit
      if not isinstance(e, tf.errors.OpError):
        raise
      raise self._fail(e, f"split {config.eval_split}") from e


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


def create_tfds(config) -> DataSource:
  """`imagenet_tfds`: a prepared TFDS dataset (see imagenet_data_config)."""
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
      info = builder.info.splits[split]
      return ArrayRecordReader([str(p) for p in info.filepaths], list(info.shard_lengths),
                               f"{config.tfds_name}/{split}")
    return RandomAccessImageSource(reader(config.train_split), reader(config.eval_split),
                                   num_classes, config)
  logging.info("TFDS %s is prepared as %s: streaming it (resume skips within an epoch); "
               "prepare it as array_record for random access.", config.tfds_name, fmt)
  return TfdsStreamingSource(builder, config, num_classes)
