"""ImageNet prepared once (data/prepare.py, scripts/prepare_imagenet.py): labels and
counts, skipped sources, resume after an interruption, damaged shards, and exact
(seed, step) batches through the imagenet_tfds source."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from bn_inception import schema
from bn_inception.data import DataError, create_source
from bn_inception.data import prepare

SIDE = 32
SYNSETS = ("n01440764", "n01443537", "n15075141")
# (height, width) of the 3 images of each class: larger than SIDE (shrunk), smaller (kept).
SHAPES = ((80, 60), (48, 96), (24, 30))


def level(c, k):
  """The flat grey level of image k of class c: tells both apart after decoding."""
  return 30 + 70 * c + 15 * k


def make_folder(root):
  for c, synset in enumerate(SYNSETS):
    os.makedirs(root / synset)
    for k, shape in enumerate(SHAPES):
      Image.new("RGB", shape[::-1], (level(c, k),) * 3).save(root / synset / f"{k}.JPEG",
                                                             quality=95)
  good = (root / SYNSETS[1] / "0.JPEG").read_bytes()
  (root / SYNSETS[1] / "truncated.JPEG").write_bytes(good[:len(good) // 2])
  Image.new("L", (40, 64), level(2, 3)).save(root / SYNSETS[2] / "grey.png")
  return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("prepared")
  src = make_folder(base / "src")
  manifest = prepare.prepare(str(src), str(base / "out"), side=SIDE, shards=2, workers=1)
  return src, base / "out", manifest


def source_of(out, **overrides):
  return create_source(schema.imagenet_data_config(
      "imagenet_tfds", tfds_data_dir=str(out), tfds_name=prepare.NAME, image_size=16,
      **overrides))


def files(root):
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def test_labels_counts_sizes_and_the_skipped_image(prepared):
  src, out, manifest = prepared
  good = 3 * len(SHAPES) + 1  # + grey.png; truncated.JPEG skipped
  assert manifest["splits"]["train"] == {"images": good, "shards": 2, "skipped": 1}
  assert manifest["num_classes"] == 3 and manifest["side"] == SIDE
  skipped = [s for s in manifest["skipped"] if s["split"] == "train"]
  assert [s["source"] for s in skipped] == [f"{SYNSETS[1]}/truncated.JPEG"]
  assert "truncated" in skipped[0]["reason"].lower()
  source = source_of(out)
  assert (source.num_classes, source.num_train_examples, source.num_eval_examples) == (
      3, good, good)  # no eval_input / eval_fraction: validation = the training images
  reader = source.train_reader
  seen = {}
  for i in range(len(reader)):
    r = reader.record(i)
    name = r["file_name"].decode()
    synset, file = name.split("/")
    assert r["label"] == SYNSETS.index(synset)  # the sorted synset order
    image = Image.open(io.BytesIO(r["image"]))
    assert image.format == "JPEG" and image.mode == "RGB"
    k = 3 if file == "grey.png" else int(file[0])
    h, w = SHAPES[k] if k < 3 else (64, 40)
    scale = min(1.0, SIDE / min(h, w))  # shorter side bounded, aspect kept
    assert image.size == (round(w * scale), round(h * scale))
    assert abs(np.asarray(image).mean() - level(SYNSETS.index(synset), k)) < 3
    seen[name] = r["label"]
  assert len(seen) == good


def test_held_out_validation_split_is_the_folder_sources(tmp_path):
  src = make_folder(tmp_path / "src")
  manifest = prepare.prepare(str(src), str(tmp_path / "out"), side=SIDE, workers=1,
                             eval_fraction=0.3, split_seed=4)
  folder = create_source(schema.imagenet_data_config(train_dir=str(src), eval_fraction=0.3,
                                                     split_seed=4))
  held = sorted(os.path.relpath(p, src) for p in folder.eval_reader.paths)
  source = source_of(tmp_path / "out")
  reader = source.eval_reader
  names = sorted(reader.record(i)["file_name"].decode() for i in range(len(reader)))
  assert names == [h for h in held if not h.endswith("truncated.JPEG")]
  assert manifest["splits"]["validation"]["images"] == len(names)


def test_resume_keeps_finished_shards_and_equals_an_uninterrupted_run(prepared, tmp_path,
                                                                      monkeypatch):
  src, uninterrupted, _ = prepared
  out = tmp_path / "out"
  real, written = prepare.write_shard, []

  def interrupted(spec, directory, *args):
    if len(written) == 1:  # killed while writing the second shard
      (out / prepare.NAME / prepare.VERSION / (spec["file"] + ".tmp")).write_bytes(b"part")
      raise KeyboardInterrupt
    written.append(spec["file"])
    return real(spec, directory, *args)

  monkeypatch.setattr(prepare, "write_shard", interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(str(src), str(out), side=SIDE, shards=2, workers=1)
  directory = out / prepare.NAME / prepare.VERSION
  assert not (directory / "manifest.json").exists()
  first = {f: (directory / f).stat().st_mtime_ns for f in written}
  done, written[:] = list(written), []
  monkeypatch.setattr(prepare, "write_shard", lambda spec, *a: (
      written.append(spec["file"]), real(spec, *a))[1])
  prepare.prepare(str(src), str(out), side=SIDE, shards=2, workers=1)
  # Only the unfinished one (validation = the training images: its shards are copies).
  assert written == [prepare.shard_file("train", 1, 2)] and done == [
      prepare.shard_file("train", 0, 2)]
  assert {f: (directory / f).stat().st_mtime_ns for f in done} == first
  assert files(out) == files(uninterrupted)  # byte for byte


def test_damaged_shard_is_one_error_on_open_and_rewritten_on_rerun(prepared, tmp_path):
  src, original, _ = prepared
  out = tmp_path / "out"
  prepare.prepare(str(src), str(out), side=SIDE, shards=2, workers=1)
  directory = out / prepare.NAME / prepare.VERSION
  shard = directory / prepare.shard_file("train", 1, 2)
  data = bytearray(shard.read_bytes())
  data[len(data) // 3] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(DataError) as e:
    source_of(out)
  message = str(e.value)
  assert message.startswith("1 shard(s)") and shard.name in message and "CRC-32" in message
  assert "prepare_imagenet.py" in message
  others = {p.name: p.stat().st_mtime_ns for p in directory.glob("*array_record*")
            if p != shard}
  prepare.prepare(str(src), str(out), side=SIDE, shards=2, workers=1)
  assert {p.name: p.stat().st_mtime_ns for p in directory.glob("*array_record*")
          if p != shard} == others
  assert files(out) == files(original)
  assert source_of(out).num_train_examples == 10


def test_training_batches_are_a_function_of_seed_and_step(prepared):
  _, out, _ = prepared
  source = source_of(out)
  run = [b for _, b in zip(range(4), source.train_batches(0, 4, seed=3))]  # crosses an epoch
  resumed = next(source_of(out).train_batches(3, 4, seed=3))
  for key in ("image", "label"):
    np.testing.assert_array_equal(resumed[key], run[3][key])
  epoch = np.concatenate([next(source.train_batches(0, 10, seed=3))["label"]])
  assert sorted(epoch) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]  # each example once per epoch


def test_example_serialisation_is_tf_train_example():
  import tensorflow as tf
  example = tf.train.Example.FromString(prepare.serialize_example(b"\x00jpeg\xff", 999, "a/b"))
  feature = example.features.feature
  assert feature["image"].bytes_list.value == [b"\x00jpeg\xff"]
  assert feature["label"].int64_list.value == [999]
  assert feature["file_name"].bytes_list.value == [b"a/b"]


def test_bad_arguments_and_a_changed_plan_say_what_to_do(prepared, tmp_path):
  src, out, _ = prepared
  with pytest.raises(ValueError, match="quality=0"):
    prepare.prepare(str(src), str(tmp_path / "x"), quality=0)
  with pytest.raises(DataError, match="missing is not a directory"):
    prepare.prepare(str(tmp_path / "missing"), str(tmp_path / "x"))
  with pytest.raises(DataError, match="choose a new --output"):
    prepare.prepare(str(src), str(out), side=SIDE + 1, shards=2, workers=1)


def test_tfds_imagenet2012_input_keeps_its_splits_and_labels(tmp_path, monkeypatch):
  from test_imagenet_data import build_fake_imagenet2012
  import tensorflow_datasets as tfds
  tfds_dir = str(tmp_path / "tfds")
  build_fake_imagenet2012(tfds_dir, "array_record", monkeypatch)  # 9 train, 5 validation
  manifest = prepare.prepare(tfds_dir, str(tmp_path / "out"), side=16, workers=1)
  assert {k: v["images"] for k, v in manifest["splits"].items()} == {
      "train": 9, "validation": 5}
  source = source_of(tmp_path / "out")
  assert source.num_classes == 1000
  original = tfds.builder("imagenet2012", data_dir=tfds_dir)
  for split, reader in (("train", source.train_reader), ("validation", source.eval_reader)):
    theirs = original.as_data_source(split)
    expected = sorted((theirs[i]["file_name"], int(theirs[i]["label"]))
                      for i in range(len(theirs)))
    ours = sorted((reader.record(i)["file_name"], reader.record(i)["label"])
                  for i in range(len(reader)))
    assert ours == expected


def test_validation_folder_is_labelled_by_the_training_synsets(tmp_path):
  src = make_folder(tmp_path / "src")
  val = tmp_path / "val"
  os.makedirs(val / SYNSETS[2])
  Image.new("RGB", (50, 40), (9, 9, 9)).save(val / SYNSETS[2] / "v.JPEG")
  prepare.prepare(str(src), str(tmp_path / "out"), side=SIDE, workers=1, eval_input=str(val))
  reader = source_of(tmp_path / "out").eval_reader
  assert len(reader) == 1 and reader.record(0)["label"] == 2
  assert reader.record(0)["file_name"] == f"{SYNSETS[2]}/v.JPEG".encode()


def test_reader_reads_what_tfds_reads_and_refuses_what_it_cannot(prepared, tmp_path):
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module
  from bn_inception.data.image_readers import ArrayRecordReader
  _, out, _ = prepared
  reader = source_of(out).train_reader
  theirs = tfds.builder(prepare.NAME, data_dir=str(out)).as_data_source(
      "train", decoders={"image": tfds.decode.SkipDecoding()})
  n = len(theirs)
  assert len(reader) == n and len(reader.files) == 2  # both shards, read in one call
  indices = np.random.default_rng(0).permutation(np.r_[np.arange(n), [n - 1, 0, 3]])
  images, labels = reader.fetch(indices)
  assert list(images) == [theirs[int(i)]["image"] for i in indices]
  assert labels.dtype == np.int32 and list(labels) == [theirs[int(i)]["label"] for i in indices]
  assert reader.record(2)["file_name"] == theirs[2]["file_name"]
  with pytest.raises(IndexError, match=f"has {n} records"):
    reader.fetch([0, n])
  lengths = np.diff(reader.starts).tolist()
  wrong = ArrayRecordReader(reader.files, [lengths[0] + 1, lengths[1] - 1], "wrong")
  with pytest.raises(DataError, match=f"holds {lengths[0]} records; the dataset's info says"):
    wrong.fetch([0])
  garbage = str(tmp_path / "garbage.array_record")
  writer = array_record_module.ArrayRecordWriter(garbage, "group_size:1")
  writer.write(b"\xff\xff not a proto")
  writer.close()
  with pytest.raises(DataError, match=r"Record 0 of junk is not a tf.Example"):
    ArrayRecordReader([garbage], [1], "junk").fetch([0])
