"""How fast ImageNet input is read, and where each image's time goes
(scripts/data_throughput.py; docs/data.md, Measured throughput).

* `measure`: images/s of a data source's training or evaluation batches.
* `reference_batches`: a plain tf.data pipeline doing the training pipeline's work
  on the same image files (read, Inception crop window, decode inside it, resize,
  flip, uint8, batch), written from TensorFlow ops alone -- the yardstick the
  project's own pipeline is held to. Like the default config (distort_on_device) it
  leaves colour distortion to the accelerator; with distort_on_device=False the
  project's pipeline also distorts on the host and the two no longer do the same work.
* `stage_costs`: CPU milliseconds per image of each stage of that work (file read,
  crop window, entropy decoding, inverse DCT, resize, flip), from pipelines that
  stop after each stage, and of the project's per-step Python (the reader's fetch).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, Iterator, Sequence

import tensorflow as tf

from bn_inception import progress
from bn_inception.data import prepare
from bn_inception.data.base import EpochSampler
from bn_inception.data.factory import create_source
from bn_inception.data.image_readers import list_image_folder


def cores() -> int:
  """The cores this process may run on (its affinity, not the machine's count)."""
  return len(os.sched_getaffinity(0))


def _timed(batches: Iterator, num_batches: int, desc: str, show: bool = True) -> Dict:
  start = time.perf_counter()
  first = next(batches)
  first_s = time.perf_counter() - start
  start, n = time.perf_counter(), 0
  for _, batch in progress.track(zip(range(num_batches), batches), desc, num_batches,
                                 "batches", show=show):
    n += len(batch["label"])
  seconds = time.perf_counter() - start
  return {"batch_size": len(first["label"]), "images": n, "seconds": round(seconds, 2),
          "images_per_s": round(n / seconds, 1), "first_batch_s": round(first_s, 2)}


def measure(source, batch_size: int, num_batches: int, split: str = "train",
            show: bool = True) -> Dict:
  """Images/s of `source`'s batches over `num_batches` after the first (timed apart)."""
  batches = (source.train_batches(0, batch_size, seed=0) if split == "train"
             else source.eval_batches(batch_size))
  return {"split": split, **_timed(batches, num_batches, f"{split} batches", show)}


def _crop_window(data, seed, config):
  """[y, x, h, w] of the Inception crop (sample_distorted_bounding_box, as in training)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.image.extract_jpeg_shape(data), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
      min_object_covered=config.crop_min_object_covered,
      aspect_ratio_range=tuple(config.aspect_ratio_range),
      area_range=tuple(config.crop_area_range), max_attempts=config.crop_max_attempts,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def _stages(config) -> Dict[str, Callable]:
  """(position, encoded JPEG) -> the work up to each stage; the last is the whole of
  the reference pipeline's per-image work (colour distortion left to the device)."""
  size = [config.image_size, config.image_size]

  def seed(i):
    return tf.stack([tf.constant(0, tf.int64), i])

  def window(i, data):
    return _crop_window(data, seed(i), config)

  def corner(i, data):  # the last 8x8 block: decoding it entropy-decodes the whole file
    h, w = tf.unstack(tf.image.extract_jpeg_shape(data)[:2])
    return tf.stack([tf.maximum(h - 8, 0), tf.maximum(w - 8, 0), tf.minimum(h, 8),
                     tf.minimum(w, 8)])

  def crop(i, data):
    return tf.image.decode_and_crop_jpeg(data, window(i, data), channels=3)

  def resized(i, data):
    return tf.image.resize(tf.cast(crop(i, data), tf.float32), size,
                           method=config.resize_method, antialias=config.antialias)

  def full(i, data):
    image = resized(i, data)
    if config.random_flip:
      image = tf.image.stateless_random_flip_left_right(image, seed(i))
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)

  return {
      "crop window": window,
      "entropy decoding": lambda i, d: tf.image.decode_and_crop_jpeg(d, corner(i, d),
                                                                     channels=3),
      "+ inverse DCT of the window": crop,
      "+ resize": resized,
      "+ flip, uint8": full,
      "whole-image decode (for comparison)": lambda i, d: tf.io.decode_jpeg(d, channels=3),
  }


def _pipeline(items: Sequence, fn: Callable, batch_size: int, read_files: bool):
  ds = tf.data.Dataset.from_tensor_slices(list(items)).repeat()
  if read_files:
    ds = ds.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = tf.data.Dataset.zip(tf.data.Dataset.range(2**62), ds)

  def example(i, data):  # a decoded crop's shape varies: keep one pixel to batch it
    out = fn(i, data)
    return {"image": out if out.shape.is_fully_defined() else out[:1, :1], "label": i}

  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(
      options)


def reference_batches(paths: Sequence[str], config, batch_size: int, seed: int = 0):
  """The reference pipeline over image files: `paths` in epoch-wise permutations."""
  order = EpochSampler(len(paths), seed).indices(0, len(paths))
  ordered = [paths[i] for i in order]
  return _pipeline(ordered, _stages(config)["+ flip, uint8"], batch_size,
                   read_files=True).as_numpy_iterator()


def _ms_per_image(items, fn, batch_size, num_batches, read_files) -> float:
  rate = _timed(_pipeline(items, fn, batch_size, read_files).as_numpy_iterator(),
                num_batches, "", show=False)["images_per_s"]
  return round(1000.0 * cores() / rate, 3)


def stage_costs(encoded: Sequence[bytes], paths: Sequence[str], reader, config,
                batch_size: int = 64, num_batches: int = 30) -> Dict[str, float]:
  """CPU ms per image (all cores busy) of the pipeline stopped after each stage, on
  `encoded` images held in memory; "file read" reads `paths` and does nothing else;
  "fetch (Python, one thread)" is `reader.fetch` per image, or absent for None."""
  out = {}
  if paths:
    out["file read"] = _ms_per_image(paths, lambda i, d: tf.strings.length(d), batch_size,
                                     num_batches, read_files=True)
  if reader is not None:
    sampler, n, start = EpochSampler(len(reader), 0), 0, time.perf_counter()
    for step in range(num_batches):
      n += len(reader.fetch(sampler.indices(step, batch_size))[1])
    out["fetch (Python, one thread)"] = round(1000.0 * (time.perf_counter() - start) / n, 3)
  for name, fn in _stages(config).items():
    out[name] = _ms_per_image(encoded, fn, batch_size, num_batches, read_files=False)
  return out


def prepared_config(data_config, directory: str):
  """`data_config` reading the prepared dataset in `directory` instead."""
  config = data_config.copy_and_resolve_references()
  config.name, config.tfds_name, config.tfds_data_dir = "imagenet_tfds", prepare.NAME, directory
  return config


def compare(data_config, directory: str, rounds: int, batch_size: int, num_batches: int,
            split: str) -> dict:
  """`data_config`'s data (full_size), the prepared dataset in `directory` and, for a
  folder's training batches, the plain reference: timed alternately, `rounds` times
  each after an untimed warm-up of each; their mean rates, per core, and `ratio` =
  prepared / full_size."""
  sources = {"full_size": create_source(data_config),
             "prepared": create_source(prepared_config(data_config, directory))}
  timers = {name: (lambda n=num_batches, s=source: measure(s, batch_size, n, split))
            for name, source in sources.items()}
  paths = getattr(sources["full_size"].train_reader, "paths", None)  # a folder's files
  if split == "train" and paths is not None:
    timers["reference"] = lambda n=num_batches: {"split": split, **_timed(
        reference_batches(paths, data_config, batch_size), n, "reference batches")}
  for name, timer in timers.items():  # untimed: tf.data's autotuning settles, files cached
    print(name, "warm-up", timer(max(1, num_batches // 4))["images_per_s"])
  rates = {name: [] for name in timers}
  for _ in range(rounds):
    for name, timer in timers.items():
      result = timer()
      print(name, result)
      rates[name].append(result["images_per_s"])
  num_cores = cores()
  out = {"split": split, "image_size": data_config.image_size, "batch_size": batch_size,
         "batches": num_batches, "rounds": rounds, "cores": num_cores}
  for name, values in rates.items():
    mean = statistics.mean(values)
    out[name] = {"images_per_s": round(mean, 1), "per_core": round(mean / num_cores, 1),
                 "rounds": values}
  # The ratios of the means, and each round's own (the pipelines alternate, so a round's
  # ratio is paired against the host's drift).
  for key, (a, b) in (("ratio", ("prepared", "full_size")),
                      ("full_size_vs_reference", ("full_size", "reference"))):
    if b in out:
      out[key] = round(out[a]["images_per_s"] / out[b]["images_per_s"], 2)
      out[key + "_rounds"] = [round(x / y, 2) for x, y in zip(rates[a], rates[b])]
  return out


def stages(data_config, directory: str, batch_size: int, num_batches: int) -> dict:
  """`stage_costs` of the folder `data_config.train_dir` and, given `directory`, of
  the prepared dataset there (with its reader's fetch)."""
  paths = list_image_folder(data_config.train_dir, "train_dir")[0]
  encoded = [open(p, "rb").read() for p in paths]
  out = {"image_size": data_config.image_size, "cores": cores(),
         "full_size": stage_costs(encoded, paths, None, data_config, batch_size, num_batches)}
  out["full_size"]["bytes per image"] = round(sum(map(len, encoded)) / len(encoded))
  if directory:
    reader = create_source(prepared_config(data_config, directory)).train_reader
    images = list(reader.fetch(range(len(reader)))[0])
    out["prepared"] = stage_costs(images, [], reader, data_config, batch_size, num_batches)
    out["prepared"]["bytes per image"] = round(sum(map(len, images)) / len(images))
  for name in ("full_size", "prepared"):
    for stage, value in out.get(name, {}).items():
      print(f"{name:10s} {stage:38s} {value}")
  return out
