"""ImageNet prepared once: re-encoded at a bounded shorter side into ArrayRecord.

`prepare()` reads an image folder (`<dir>/<synset>/<image>`, labels in the
sorted synset order of the `imagenet_folder` source, read through that source so
they are the same by construction) or a prepared TFDS `imagenet2012` (its
labels), and writes a TFDS dataset `imagenet_prepared` under the output dir:

  <output>/imagenet_prepared/1.0.0/dataset_info.json, features.json, ...
      imagenet_prepared-{train,validation}.array_record-000NN-of-000MM
      manifest.json   counts, side, quality, source, per-shard size and CRC-32,
                      the skipped (undecodable or truncated) source images
      .prepare/       one record per finished shard (what resuming keeps)

Without a validation folder or held-out fraction the validation split is the
training images, as in the `imagenet_folder` source: its shards are copies.

The `imagenet_tfds` source opens it by random access (data.tfds_name=
imagenet_prepared, data.tfds_data_dir=<output>) and checks every shard against
the manifest once at open (`verify_prepared`).

Images whose shorter side exceeds `side` are shrunk to it (aspect kept, PIL
JPEG draft + Lanczos); smaller RGB JPEGs keep their bytes; everything else (PNG,
CMYK, greyscale) is re-encoded as RGB JPEG. Bounding the shorter side, not the
longer one, keeps every image's central 87.5% evaluation crop at >= 224 px for
side >= 256, so no image is upsampled for evaluation. Each shard is written by
one worker process to a temporary file, checksummed and renamed: an interrupted
run, rerun with the same arguments, keeps the finished shards whose checksum
still matches and writes only the rest -- the result is byte-identical to an
uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

from bn_inception import progress
from bn_inception.data.base import DataError
from bn_inception.data.shard_check import MANIFEST, file_crc32, shard_damage

NAME = "imagenet_prepared"
VERSION = "1.0.0"
SPLITS = ("train", "validation")
STATE = ".prepare"
IMAGES_PER_SHARD = 1250  # the default shard count: ImageNet's train split -> 1024 shards
MAX_SHARDS = 1024


def dataset_dir(output: str) -> str:
  return os.path.join(output, NAME, VERSION)


def shard_file(split: str, index: int, count: int) -> str:
  return f"{NAME}-{split}.array_record-{index:05d}-of-{count:05d}"


def default_shards(num_images: int) -> int:
  return int(min(MAX_SHARDS, max(16, math.ceil(num_images / IMAGES_PER_SHARD))))


# --------------------------------------------------------------------------- one image


def reencode(data: bytes, side: int, quality: int) -> bytes:
  """JPEG bytes of `data` with its shorter side at most `side` (raises on a bad image)."""
  from PIL import Image
  with Image.open(io.BytesIO(data)) as image:
    w, h = image.size
    short = min(w, h)
    if short <= side and image.format == "JPEG" and image.mode == "RGB":
      image.load()  # decodable to the end (a truncated file raises here)
      return data
    size = (w, h)
    if short > side:
      size = (side, round(h * side / w)) if w <= h else (round(w * side / h), side)
      image.draft("RGB", size)  # JPEG: decode at the smallest 1/2^k scale >= size
    rgb = image.convert("RGB")
    if rgb.size != size:
      rgb = rgb.resize(size, Image.LANCZOS)
  out = io.BytesIO()
  rgb.save(out, "JPEG", quality=quality)
  return out.getvalue()


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited protobuf field."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def serialize_example(image: bytes, label: int, file_name: str) -> bytes:
  """A tf.train.Example {image: bytes, label: int64, file_name: bytes}, keys sorted
  (what TFDS's Image / ClassLabel / Text features parse), without TensorFlow."""
  features = {
      "file_name": _field(1, _field(1, file_name.encode())),  # Feature.bytes_list
      "image": _field(1, _field(1, image)),
      "label": _field(3, _field(1, _varint(int(label)))),     # Feature.int64_list, packed
  }
  entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v))
                     for k, v in sorted(features.items()))
  return _field(1, entries)


# --------------------------------------------------------------------------- the plan


def _digest(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _count(items: Dict) -> int:
  return len(items["labels"]) if "labels" in items else items["size"]


def _spec_size(spec: Dict) -> int:
  return len(spec["labels"]) if spec["kind"] == "folder" else spec["range"][1] - spec["range"][0]


def _split_specs(split: str, items: Dict, count: int) -> List[Dict]:
  """`count` shard specs of one split: contiguous runs of its items, in order."""
  n = _count(items)
  count = max(1, min(count, n))
  bounds = np.linspace(0, n, count + 1).round().astype(int)
  specs = []
  for k in range(count):
    a, b = int(bounds[k]), int(bounds[k + 1])
    spec = {"split": split, "index": k, "file": shard_file(split, k, count)}
    if items.get("copy"):  # the same images as the train split's shard k: a copy of it
      spec["copy_of"] = shard_file("train", k, count)
    if "labels" in items:
      spec.update(kind="folder", root=items["root"], sources=items["sources"][a:b],
                  labels=items["labels"][a:b])
    else:
      spec.update(kind="tfds", data_dir=items["data_dir"], tfds_split=items["tfds_split"],
                  range=[a, b])
    specs.append(spec)
  return specs


def _folder_items(input_dir: str, eval_input: str, eval_fraction: float, split_seed: int):
  """({split: items}, class names) of an image folder, read through the `imagenet_folder`
  source (its listing, labels and held-out split)."""
  from bn_inception import schema
  from bn_inception.data.factory import create_source
  source = create_source(schema.imagenet_data_config(
      train_dir=input_dir, eval_dir=eval_input, eval_fraction=eval_fraction,
      split_seed=split_seed, image_size=1))
  names = [""] * source.num_classes
  splits = {}
  roots = (input_dir, eval_input or input_dir)
  for split, reader, root in zip(SPLITS, (source.train_reader, source.eval_reader), roots):
    paths = [str(p) for p in reader.paths]
    for path, label in zip(paths, reader.labels):
      names[label] = os.path.basename(os.path.dirname(path))
    splits[split] = {"root": os.path.abspath(root),
                     "sources": [os.path.abspath(p) for p in paths],
                     "labels": [int(x) for x in reader.labels]}
  if source.eval_reader is source.train_reader:  # validation = the training images
    splits["validation"]["copy"] = True
  return splits, names


def _tfds_builder(data_dir: str):
  import tensorflow_datasets as tfds
  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  if not builder.is_prepared():
    raise DataError(f"{data_dir} holds no prepared TFDS imagenet2012 (--input).")
  return builder


def _tfds_items(data_dir: str):
  builder = _tfds_builder(data_dir)
  splits = {split: {"data_dir": os.path.abspath(data_dir), "tfds_split": split,
                    "size": builder.info.splits[split].num_examples} for split in SPLITS}
  return splits, list(builder.info.features["label"].names)


def make_plan(input_dir: str, shards: int = 0, eval_input: str = "",
              eval_fraction: float = 0.0, split_seed: int = 0):
  """(shard specs of both splits, class names): a pure function of the arguments and
  the input's files, so a rerun finds the same plan."""
  for path in filter(None, (input_dir, eval_input)):
    if not os.path.isdir(path):
      raise DataError(f"{os.path.abspath(path)} is not a directory: give an image folder "
                      f"<dir>/<synset>/<image> or a TFDS data dir holding imagenet2012.")
  if os.path.isdir(os.path.join(input_dir, "imagenet2012")):
    splits, names = _tfds_items(input_dir)
  else:
    splits, names = _folder_items(input_dir, eval_input, eval_fraction, split_seed)
  train_n = _count(splits["train"])
  train_shards = shards or default_shards(train_n)
  specs = []
  for split, items in splits.items():  # validation: shards in proportion to its size
    specs += _split_specs(split, items, round(train_shards * _count(items) / train_n))
  return specs, names


# --------------------------------------------------------------------------- one shard


def _tfds_records(spec: Dict):
  import tensorflow_datasets as tfds
  builder = _tfds_builder(spec["data_dir"])
  a, b = spec["range"]
  split = f"{spec['tfds_split']}[{a}:{b}]"
  skip = {"image": tfds.decode.SkipDecoding()}
  if builder.info.file_format is not None and builder.info.file_format.value == "array_record":
    source = builder.as_data_source(split, decoders=skip)
    return (source[i] for i in range(len(source)))
  return builder.as_dataset(split, decoders=skip, shuffle_files=False).as_numpy_iterator()


def _read(spec: Dict):
  """(encoded bytes or why they could not be read, label, name) of a shard's images."""
  if spec["kind"] == "tfds":
    for record in _tfds_records(spec):
      name = record["file_name"]
      yield record["image"], int(record["label"]), (
          name.decode() if isinstance(name, bytes) else str(name))
    return
  for path, label in zip(spec["sources"], spec["labels"]):
    name = os.path.relpath(path, spec["root"])
    try:
      with open(path, "rb") as f:
        yield f.read(), label, name
    except OSError as e:
      yield f"unreadable: {e}", label, name


def write_shard(spec: Dict, directory: str, side: int, quality: int) -> Dict:
  """Write one shard (via a temporary file) and return its manifest entry."""
  from array_record.python import array_record_module
  path = os.path.join(directory, spec["file"])
  tmp = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")  # TFDS's option
  count, skipped = 0, []
  for data, label, name in _read(spec):
    if isinstance(data, str):
      skipped.append({"source": name, "reason": data})
      continue
    try:
      image = reencode(data, side, quality)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
      skipped.append({"source": name, "reason": f"undecodable: {type(e).__name__}: {e}"})
      continue
    writer.write(serialize_example(image, label, name))
    count += 1
  writer.close()
  os.replace(tmp, path)
  return {"file": spec["file"], "split": spec["split"], "index": spec["index"],
          "images": count, "bytes": os.path.getsize(path), "crc32": file_crc32(path),
          "skipped": skipped, "spec": _digest(spec)}


def _write_shard_task(args) -> Dict:
  return write_shard(*args)


# --------------------------------------------------------------------------- the dataset


def _json(path: str, value) -> None:
  """Write `value` as JSON atomically (a temporary file renamed)."""
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(path + ".tmp", path)


def _kept(directory: str, specs: Sequence[Dict]) -> Dict[str, Dict]:
  """The finished shards of an earlier run that still match their plan and checksum."""
  kept = {}
  for spec in specs:
    record_path = os.path.join(directory, STATE, spec["file"] + ".json")
    if not os.path.isfile(record_path):
      continue
    with open(record_path) as f:
      record = json.load(f)
    if record["spec"] == _digest(spec) and shard_damage(directory, record) is None:
      kept[spec["file"]] = record
  return kept


def _check_plan(directory: str, plan: Dict) -> None:
  path = os.path.join(directory, STATE, "plan.json")
  if os.path.isfile(path):
    with open(path) as f:
      earlier = json.load(f)
    changed = [f"{k} {earlier.get(k)!r} (now {v!r})" for k, v in plan.items()
               if earlier.get(k) != v]
    if changed:  # "plan": the input's files, the shard count or the held-out split
      raise DataError(
          f"{directory} holds a preparation with other settings: {', '.join(changed)}. "
          f"Rerun with the earlier ones to finish it, or choose a new --output.")
  os.makedirs(os.path.join(directory, STATE), exist_ok=True)
  _json(path, plan)


def _write_metadata(directory: str, records: List[Dict], names: List[str]) -> None:
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import naming
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(names=names),
      "file_name": tfds.features.Text()})
  template = naming.ShardedFileTemplate(data_dir=directory, dataset_name=NAME,
                                        filetype_suffix="array_record")
  splits = [tfds.core.SplitInfo(
      name=split, shard_lengths=[r["images"] for r in records if r["split"] == split],
      num_bytes=sum(r["bytes"] for r in records if r["split"] == split),
      filename_template=template.replace(split=split)) for split in SPLITS]
  tfds.folder_dataset.write_metadata(
      data_dir=directory, features=features, split_infos=splits, version=VERSION,
      filename_template=template, check_data=False, supervised_keys=("image", "label"),
      description="ImageNet re-encoded by bn_inception.data.prepare (see manifest.json).")


def _manifest(plan: Dict, records: List[Dict], names: List[str]) -> Dict:
  splits = {split: {"images": sum(r["images"] for r in records if r["split"] == split),
                    "shards": sum(r["split"] == split for r in records),
                    "skipped": sum(len(r["skipped"]) for r in records if r["split"] == split)}
            for split in SPLITS}
  skipped = [dict(s, split=r["split"]) for r in records for s in r["skipped"]]
  shards = [{k: r[k] for k in ("file", "split", "images", "bytes", "crc32")} for r in records]
  return dict(plan, dataset=NAME, version=VERSION, num_classes=len(names), splits=splits,
              shards=shards, skipped=skipped)


def prepare(input_dir: str, output: str, side: int = 256, quality: int = 90,
            shards: int = 0, workers: int = 0, eval_input: str = "",
            eval_fraction: float = 0.0, split_seed: int = 0) -> Dict:
  """Prepare (or finish preparing) `input_dir` into `output`; returns the manifest."""
  if side < 1 or not 1 <= quality <= 100 or shards < 0 or workers < 0:
    raise ValueError(f"side={side} must be >= 1, quality={quality} in [1, 100], "
                     f"shards={shards} and workers={workers} >= 0 (0: automatic).")
  specs, names = make_plan(input_dir, shards, eval_input, eval_fraction, split_seed)
  directory = dataset_dir(output)
  plan = {"source": os.path.abspath(input_dir), "eval_source": eval_input and
          os.path.abspath(eval_input), "side": side, "quality": quality,
          "plan": _digest(specs)}
  _check_plan(directory, plan)
  records = _kept(directory, specs)
  pending = [(s, directory, side, quality) for s in specs if s["file"] not in records]
  total = sum(map(_spec_size, specs))
  workers = min(workers or len(os.sched_getaffinity(0)), max(1, len(pending)))
  _run(pending, workers, records, directory, progress.Progress(
      "preparing images", total, "images",
      initial=total - sum(_spec_size(s) for s, *_ in pending)))
  ordered = [records[s["file"]] for s in specs]
  _write_metadata(directory, ordered, names)
  manifest = _manifest(plan, ordered, names)
  _json(os.path.join(directory, MANIFEST), manifest)
  return manifest


def _run(pending: List, workers: int, records: Dict, directory: str,
         bar: progress.Progress) -> None:
  """Write the pending shards on `workers` processes, recording each as it finishes."""
  def done(record):
    records[record["file"]] = record
    _json(os.path.join(directory, STATE, record["file"] + ".json"), record)
    bar.update(record["images"] + len(record["skipped"]))

  copies = [args for args in pending if "copy_of" in args[0]]
  pending = [args for args in pending if "copy_of" not in args[0]]
  with bar:
    if workers <= 1:
      for args in pending:
        done(write_shard(*args))
    else:
      with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for record in pool.imap_unordered(_write_shard_task, pending):
          done(record)
    for spec, *_ in copies:
      done(_copy_shard(spec, directory, records[spec["copy_of"]]))


def _copy_shard(spec: Dict, directory: str, original: Dict) -> Dict:
  """A validation shard holding the same images as a finished train shard."""
  path = os.path.join(directory, spec["file"])
  shutil.copyfile(os.path.join(directory, spec["copy_of"]), path + ".tmp")
  os.replace(path + ".tmp", path)
  return dict(original, file=spec["file"], split=spec["split"], spec=_digest(spec))
