"""Bad input, one table: every case is one `error:` line, its exit status, no traceback,
and nothing written or changed in the workdir.

Most cases run in this process through the code path of the entry points
(`cli.parse_flags` on the script's flags, then `cli.run_main` around the script's
work), so a case costs milliseconds to a few seconds; the few that need a real
process (the flag parser end to end, 8 devices) start one. docs/reliability.md
lists the categories; the tally is printed at the end.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from bn_inception import cli, schema

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BN_INCEPTION_DATA", REPO.parent / "shared" / "data"))
MNIST = DATA / "mnist"
TINY = ["--config.model.hidden_units=(16,16)", "--config.train.num_steps=40",
        "--config.train.checkpoint_every=20", "--config.train.log_every=20",
        "--config.train.eval_every=40", "--config.train.eval_batch_size=2000",
        "--config.train.eval_at_start=False"]
TALLY = {"cases": 0, "clean": 0}

pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST not found (BN_INCEPTION_DATA)")


@pytest.fixture(scope="module", autouse=True)
def report_tally():
  yield
  print(f"\nbad-input tally: {json.dumps(TALLY)}")
  if os.environ.get("BAD_INPUT_TALLY"):
    Path(os.environ["BAD_INPUT_TALLY"]).write_text(json.dumps(TALLY))


# ------------------------------------------------------------------- entry points


def _exit_status(fn, *args, **kwargs) -> int:
  try:
    fn(*args, **kwargs)
  except SystemExit as e:
    return 0 if e.code is None else e.code
  return 0


def train(workdir, *argv, config="configs/mnist_fig1.py"):
  """scripts/train.py in this process: its flags through cli.parse_flags, then
  cli.run_main(train.train_and_evaluate)."""
  from bn_inception import train as train_lib
  merged = {a.split("=", 1)[0]: a for a in [*TINY, *argv]}  # a repeated tuple would append
  args = ["train.py", f"--config={config}", f"--workdir={workdir}", *merged.values()]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=args)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  rc = _exit_status(cli.parse_flags, args, fv)
  if rc:
    return rc
  return _exit_status(cli.run_main, train_lib.train_and_evaluate, fv.config, fv.workdir)


def evaluate(workdirs, *, crops=(1,), step=None, overrides=(), output_dir=None):
  """scripts/evaluate.py's work in this process, through cli.run_main."""
  from bn_inception import ensemble

  def run():
    specs = [ensemble.parse_member(str(w), step=step)
             for w in ensemble.expand_workdirs([str(w) for w in workdirs])]
    ensemble.run(specs, list(crops), output_dir=str(output_dir or workdirs[0]) + "_eval",
                 batch_size=500, overrides=list(overrides))
  return _exit_status(cli.run_main, run)


def sweep(spec, workdir, **kwargs):
  """scripts/sweep.py's work in this process, through cli.run_main."""
  from bn_inception import sweep_runner
  return _exit_status(cli.run_main, sweep_runner.run_sweep, str(spec), str(workdir),
                      inprocess=True, **kwargs)


def script(name, *argv, devices=1, timeout=240):
  """A real process: the flag parser end to end."""
  env = {k: v for k, v in os.environ.items() if k != "BN_INCEPTION_DEBUG"}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  p = subprocess.run([sys.executable, f"scripts/{name}", *argv], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=timeout)
  sys.stderr.write(p.stderr)  # into capsys, as the in-process cases write
  sys.stdout.write(p.stdout)
  return p.returncode


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """One finished tiny run (checkpoints at 20 and 40), copied by the cases that need one."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  assert train(workdir) == 0
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["20", "40"]
  return workdir


def snapshot(root: Path) -> dict:
  """Every path under `root` with its content hash (folders: None). In a workdir that
  existed before, the lock file's holder line and the log (`log.txt`), which every
  launch that takes the lock writes, are left out: neither is run data. A new
  workdir must not exist afterwards at all (the snapshot is then empty)."""
  if not root.exists():
    return {}
  out = {".": None}
  for p in sorted(root.rglob("*")):
    if p.name in (".lock", "log.txt"):
      continue
    out[str(p.relative_to(root))] = (hashlib.sha1(p.read_bytes()).hexdigest()
                                     if p.is_file() else None)
  return out


def mnist_copy(tmp):
  dst = tmp / "mnist"
  shutil.copytree(MNIST, dst)
  return dst


def write_idx(path, array):
  dims = array.shape
  header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
  path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_idx_dir(tmp, images=12, labels=12, label_value=3):
  d = tmp / "idx"
  d.mkdir()
  for split in ("train", "t10k"):
    write_idx(d / f"{split}-images-idx3-ubyte", np.zeros((images, 28, 28)))
    write_idx(d / f"{split}-labels-idx1-ubyte", np.full((labels,), label_value))
  return d


def config_file(tmp, source):
  path = tmp / "my_config.py"
  path.write_text(source)
  return str(path)


def sweep_file(tmp, body):
  path = tmp / "my_sweep.py"
  path.write_text("from bn_inception.sweep import Member\n\ndef get_sweep():\n"
                  f"  return {body}\n")
  return path


def readonly_mount(tmp):
  """A read-only tmpfs (root with mount only), else None."""
  target = tmp / "ro"
  target.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs",
                                          str(target)], capture_output=True).returncode:
    return None
  return target


# ------------------------------------------------------------------------- cases
# name -> (make(tmp, finished) -> (run() -> exit status, workdir to watch), status, text)

def W(tmp):
  return tmp / "run"


def bad_flag(*argv, **kw):
  return lambda tmp, fin: (lambda: train(W(tmp), *argv, **kw), W(tmp))


def in_copy(*argv):
  """`argv` on a copy of the finished run."""
  def make(tmp, fin):
    work = tmp / "copy"
    shutil.copytree(fin, work)
    return (lambda: train(work, *argv)), work
  return make


def mnist_fault(damage, *argv):
  def make(tmp, fin):
    data = damage(tmp)
    return (lambda: train(W(tmp), f"--config.data.data_dir={data}", *argv)), W(tmp)
  return make


def truncate(tmp):
  data = mnist_copy(tmp)
  os.truncate(data / "train-images-idx3-ubyte.gz", 100_000)
  return data


def garble(tmp):
  data = mnist_copy(tmp)
  path = data / "train-labels-idx1-ubyte.gz"
  blob = bytearray(path.read_bytes())
  blob[len(blob) // 2:len(blob) // 2 + 64] = np.random.default_rng(0).bytes(64)
  path.write_bytes(bytes(blob))
  return data


def bad_magic(tmp):
  d = tiny_idx_dir(tmp)
  (d / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01" + bytes(16))
  return d


def corrupt_jpeg_folder(tmp):
  from PIL import Image
  root = tmp / "images"
  for k in range(3):
    (root / "a").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20, 3), 40 * k, np.uint8)).save(root / "a" / f"good{k}.jpg")
  (root / "b").mkdir()
  (root / "b" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
  return root


IMAGENET = ["--config.model.num_classes=2", "--config.model.hidden_units=(8,)",
            "--config.train.batch_size=4", "--config.train.eval_batch_size=4",
            "--config.train.num_steps=2", "--config.train.checkpoint_every=2",
            "--config.train.log_every=1", "--config.train.eval_every=0"]


def corrupt_jpeg(tmp, fin):
  root = corrupt_jpeg_folder(tmp)
  return (lambda: train(W(tmp), f"--config.data.train_dir={root}",
                        f"--config.data.eval_dir={root}", *IMAGENET,
                        config="configs/imagenet_tiny.py")), W(tmp)


def offline_download(tmp, fin):
  """Unset data_dir, no default folder, no network: a DataError within seconds, and no
  tfds folder created (HOME points into tmp)."""
  from bn_inception.data import mnist
  empty = tmp / "data_root"
  empty.mkdir()
  closed = _closed_port()

  def run():
    saved = dict(os.environ)
    os.environ.update(BN_INCEPTION_DATA=str(empty), HOME=str(tmp / "home"))
    host, mnist.DOWNLOAD_HOST = mnist.DOWNLOAD_HOST, ("127.0.0.1", closed)
    t0 = time.time()
    try:
      return train(W(tmp), "--config.data.data_dir=")
    finally:
      mnist.DOWNLOAD_HOST = host
      os.environ.clear()
      os.environ.update(saved)
      assert time.time() - t0 < 20
      assert not (tmp / "home" / "tensorflow_datasets").exists()
  return run, W(tmp)


def _closed_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]  # nothing listens once it is closed


def typo_data_dir(tmp, fin):
  def run():
    t0 = time.time()
    rc = train(W(tmp), f"--config.data.data_dir={tmp / 'mnsit'}")
    assert time.time() - t0 < 20  # no download retries
    return rc
  return run, W(tmp)


def busy(tmp, fin):
  work = tmp / "copy"
  shutil.copytree(fin, work)

  def run():
    fd = os.open(work / ".lock", os.O_RDWR | os.O_CREAT)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      os.pwrite(fd, b"pid 1 on elsewhere", 0)
      return train(work)
    finally:
      os.close(fd)
  return run, work


def workdir_is_file(tmp, fin):
  (tmp / "afile").write_text("x")
  return (lambda: train(tmp / "afile")), tmp / "afile"


def workdir_under_file(tmp, fin):
  (tmp / "afile").write_text("x")
  return (lambda: train(tmp / "afile" / "run")), tmp / "afile"


def readonly_workdir(tmp, fin):
  ro = readonly_mount(tmp)
  if ro is None:
    pytest.skip("mounting a read-only tmpfs needs root")

  def run():
    try:
      return train(ro / "run")
    finally:
      subprocess.run(["umount", str(ro)])
  return run, ro


def no_permission(tmp, fin):
  if os.geteuid() == 0:
    pytest.skip("root may write anywhere")
  d = tmp / "locked"
  d.mkdir(mode=0o555)
  return (lambda: train(d / "run")), d


def no_config_json(tmp, fin):
  """Another architecture's checkpoint: only the checkpoint itself can object."""
  work = tmp / "copy"
  shutil.copytree(fin, work)
  (work / "config.json").unlink()
  return (lambda: train(work, "--config.model.hidden_units=(16,32)")), work


def garbled_config_json(tmp, fin):
  work = tmp / "copy"
  shutil.copytree(fin, work)
  (work / "config.json").write_text('{"train": ')
  return (lambda: train(work)), work


def no_usable_checkpoint(tmp, fin):
  work = tmp / "copy"
  shutil.copytree(fin, work)
  for meta in (work / "checkpoints").glob("*/meta/metadata"):
    meta.write_text("{not json")
  return (lambda: train(work)), work


def broken_config(source):
  return lambda tmp, fin: (lambda: train(W(tmp), config=config_file(tmp, source)), W(tmp))


def eval_case(make_dirs, **kw):
  def make(tmp, fin):
    dirs = make_dirs(tmp, fin)
    return (lambda: evaluate(dirs, output_dir=tmp / "eval", **kw)), dirs[0]
  return make


def eval_without_checkpoints(tmp, fin):
  work = tmp / "copy"
  work.mkdir()
  shutil.copy(fin / "config.json", work / "config.json")
  return [work]


def eval_finished(tmp, fin):
  work = tmp / "copy"
  shutil.copytree(fin, work)
  return [work]


def sweep_case(body, *, only=None, prepare=None):
  def make(tmp, fin):
    spec = sweep_file(tmp, body)
    if prepare:
      prepare(tmp, fin)
    return (lambda: sweep(spec, tmp / "sweep", only=only)), tmp / "sweep"
  return make


def other_run_in_member_dir(tmp, fin):
  shutil.copytree(fin, tmp / "sweep" / "m")


M = "configs/mnist_fig1.py"
TINY_MEMBER = ("'model.hidden_units': (16, 16), 'train.num_steps': 40, "
               "'train.checkpoint_every': 20, 'train.eval_every': 40")

CASES = {
    # --- flags and config fields (bn_inception/overrides.py, config_checks.py)
    "unknown field": (bad_flag("--config.train.batch_sise=3"), 2,
                      "unknown config field --config.train.batch_sise"),
    "unknown section": (bad_flag("--config.trian.batch_size=3"), 2,
                        "unknown config field --config.trian.batch_size"),
    "wrong type": (bad_flag("--config.train.batch_size=abc"), 2,
                   "train.batch_size holds an int"),
    "bool for an int": (bad_flag("--config.train.num_steps=True"), 2, "wrong type"),
    "wrong tuple element": (bad_flag("--config.model.hidden_units=(16,abc)"), 2,
                            "its element '(16,abc)' is a str"),
    "keep_checkpoints=0": (bad_flag("--config.train.keep_checkpoints=0"), 2,
                           "config.train.keep_checkpoints=0 must be >= 1"),
    "keep_checkpoints<0": (bad_flag("--config.train.keep_checkpoints=-2"), 2,
                           "keep_checkpoints=-2 must be >= 1"),
    "num_steps=0": (bad_flag("--config.train.num_steps=0"), 2, "num_steps=0 must be >= 1"),
    "num_steps<0": (bad_flag("--config.train.num_steps=-5"), 2, "num_steps=-5 must be >= 1"),
    "checkpoint_every=0": (bad_flag("--config.train.checkpoint_every=0"), 2,
                           "checkpoint_every=0 must be >= 1"),
    "log_every=0": (bad_flag("--config.train.log_every=0"), 2, "log_every=0 must be >= 1"),
    "eval_every<0": (bad_flag("--config.train.eval_every=-1"), 2,
                     "eval_every=-1 must be >= 0"),
    "batch_size=0": (bad_flag("--config.train.batch_size=0"), 2, "batch_size=0 must be >= 1"),
    "eval_batch_size<0": (bad_flag("--config.train.eval_batch_size=-8"), 2,
                          "eval_batch_size=-8 must be >= 1"),
    "two bad fields, one line": (bad_flag("--config.train.log_every=0",
                                          "--config.train.num_steps=0"), 2,
                                 "num_steps=0 must be >= 1 (the number of training steps). "
                                 "config.train.log_every=0"),
    "nonfinite_policy": (bad_flag("--config.train.nonfinite_policy=maybe"), 2,
                         "config.train.nonfinite_policy='maybe'; known: stop, skip."),
    "unknown dataset": (bad_flag("--config.data.name=cifar"), 2,
                        f"config.data.name='cifar'; known: {', '.join(schema.DATASETS)}."),
    "unknown model": (bad_flag("--config.model.name=resnet"), 2,
                      "config.model.name='resnet'; known: mlp, bn_inception"),
    "learning_rate=nan": (bad_flag("--config.optim.learning_rate=nan"), 2,
                          "config.optim.learning_rate=nan must be finite"),
    "momentum=inf": (bad_flag("--config.optim.momentum=inf"), 2,
                     "config.optim.momentum=inf must be finite"),
    "unknown schedule": (bad_flag("--config.optim.schedule=cosin"), 2,
                         "config.optim.schedule='cosin'; known: constant, exponential, cosine"),
    "negative learning rate": (bad_flag("--config.optim.learning_rate=-0.1"), 2,
                               "config.optim.learning_rate=-0.1 must be >= 0.0"),
    "activation typo": (bad_flag("--config.model.activation=sigmod"), 2,
                        "config.model.activation='sigmod'; known: sigmoid, relu, tanh"),
    "probe_unit outside the layer": (bad_flag("--config.model.probe_unit=16"), 2,
                                     "config.model.probe_unit=16 must be a unit of the last"),
    "unknown stats_mode": (bad_flag("--config.bn.stats_mode=replica"), 2,
                           "known: per_device, global, group"),
    "bad group_size": (bad_flag("--config.bn.stats_mode=group", "--config.bn.group_size=7"), 2,
                       "group_size=7"),
    "distributed=yes": (bad_flag("--config.distributed=yes"), 2,
                        "config.distributed='yes'; known: auto, on, off"),
    # --- config files (bn_inception/config_files.py)
    "missing config file": (bad_flag(config="configs/nope.py"), 2,
                            "config file configs/nope.py not found"),
    "config SyntaxError": (broken_config("def get_config(:\n  pass\n"), 2, ":1: SyntaxError"),
    "config NameError": (broken_config("def get_config():\n  return undefined_name\n"), 2,
                         ":2: NameError: name 'undefined_name' is not defined"),
    "config ImportError": (broken_config("import no_such_module_xyz\n"), 2,
                           ":1: ModuleNotFoundError"),
    "config without get_config": (broken_config("x = 1\n"), 2, "get_config"),
    # --- data (bn_inception/data)
    "data_dir typo (fails fast)": (typo_data_dir, 2, "mnsit does not exist"),
    "data_dir is a file": (mnist_fault(lambda t: (t / "f").write_text("x") and t / "f"), 2,
                           "is a file, not a folder"),
    "data_dir empty folder": (mnist_fault(lambda t: (t / "e").mkdir() or t / "e"), 2,
                              "MNIST not found in"),
    "unset data_dir offline": (offline_download, 2, "is unreachable (no network?)"),
    "unset data_dir, no download": (
        lambda t, f: (lambda: (os.environ.__setitem__("BN_INCEPTION_DATA", str(t)),
                               train(W(t), "--config.data.data_dir=",
                                     "--config.data.download_if_missing=False"),
                               os.environ.__setitem__("BN_INCEPTION_DATA", str(DATA)))[1],
                      W(t)), 2, "download_if_missing=False"),
    "MNIST truncated gzip": (mnist_fault(truncate), 2,
                             "train-images-idx3-ubyte.gz could not be read"),
    "MNIST garbled gzip": (mnist_fault(garble), 2,
                           "train-labels-idx1-ubyte.gz could not be read"),
    "MNIST bad magic": (mnist_fault(bad_magic), 2, "bad magic number"),
    "MNIST counts disagree": (mnist_fault(lambda t: tiny_idx_dir(t, labels=11)), 2,
                              "disagree"),
    "MNIST label > 9": (mnist_fault(lambda t: tiny_idx_dir(t, label_value=12)), 2,
                        "labels in"),
    "corrupt JPEG in the first batch": (corrupt_jpeg, 2, "skip_corrupt_images=True"),
    "ImageNet folder missing": (
        lambda t, f: (lambda: train(W(t), f"--config.data.train_dir={t / 'nope'}", *IMAGENET,
                                    config="configs/imagenet_tiny.py"), W(t)), 2,
        "does not exist"),
    # --- workdirs (bn_inception/checkpoint.py)
    "workdir is a file": (workdir_is_file, 2, "is a file, not a folder"),
    "workdir under a file": (workdir_under_file, 2, "cannot be created"),
    "read-only filesystem": (readonly_workdir, 2, "read-only filesystem"),
    "no write permission": (no_permission, 2, "not writable"),
    "other config's workdir": (in_copy("--config.optim.learning_rate=0.1"), 2,
                               "optim.learning_rate: 0.5 in the workdir, 0.1 now"),
    "other architecture's checkpoint": (no_config_json, 2,
                                        "params/dense1/kernel: checkpoint (16, 16), model (16, 32)"),
    "num_steps below the checkpoint": (in_copy("--config.train.num_steps=30"), 2,
                                       "num_steps=30 is below the newest checkpoint's step 40"),
    "config.json unreadable": (garbled_config_json, 2, "config.json is unreadable"),
    "no usable checkpoint": (no_usable_checkpoint, 2, "No usable checkpoint"),
    "workdir in use": (busy, 2, "is in use by another training run (pid 1 on elsewhere"),
    # --- evaluation (bn_inception/ensemble.py)
    "evaluate: no checkpoints": (eval_case(eval_without_checkpoints), 2, "has no checkpoint"),
    "evaluate: not a workdir": (eval_case(lambda t, f: [t / "nothing"]), 2,
                                "not a training workdir"),
    "evaluate: missing step": (eval_case(eval_finished, step=999), 2,
                               "No checkpoint at step 999"),
    "evaluate: unknown crops": (eval_case(eval_finished, crops=(7,)), 2, "7"),
    "evaluate: unknown override": (eval_case(eval_finished, overrides=("train.batch_sise=3",)),
                                   2, "batch_sise"),
    # --- sweeps (bn_inception/sweep_runner.py)
    "sweep file missing": (lambda t, f: (lambda: sweep(t / "nope.py", t / "sweep"),
                                         t / "sweep"), 2, "nope.py not found"),
    "sweep file broken": (lambda t, f: (lambda: sweep(config_file(t, "def get_sweep(:\n"),
                                                      t / "sweep"), t / "sweep"), 2,
                          "SyntaxError"),
    "sweep member unknown field": (sweep_case(f"[Member('m', '{M}', {{'train.batch_sise': 3}})]"),
                                   2, "Sweep member 'm': unknown config field"),
    "sweep member keep_checkpoints=0": (
        sweep_case(f"[Member('m', '{M}', {{'train.keep_checkpoints': 0}})]"), 2,
        "Sweep member 'm': config.train.keep_checkpoints=0 must be >= 1"),
    "sweep member stats_mode typo": (
        sweep_case(f"[Member('m', '{M}', {{'bn.stats_mode': 'grop'}})]"), 2,
        "Sweep member 'm': config.bn.stats_mode='grop'; known: per_device, global, group"),
    "sweep member schedule typo": (
        sweep_case(f"[Member('m', '{M}', {{'optim.schedule': 'cosin'}})]"), 2,
        "Sweep member 'm': config.optim.schedule='cosin'; known: constant"),
    "sweep two members one name": (
        sweep_case(f"[Member('m', '{M}', {{}}), Member('m', '{M}', {{}})]"), 2,
        "two members named 'm'"),
    "sweep --only matches none": (sweep_case(f"[Member('m', '{M}', {{}})]", only=["x*"]), 2,
                                  "--only x* matches no member"),
    "sweep member dir holds another run": (
        sweep_case(f"[Member('m', '{M}', {{{TINY_MEMBER}, 'optim.learning_rate': 0.1}})]",
                   prepare=other_run_in_member_dir), 2,
        "optim.learning_rate: 0.5 in the workdir, 0.1 now"),
    # --- real processes: the flag parser end to end, and 8 devices
    "process: unknown field": (
        lambda t, f: (lambda: script("train.py", f"--config={M}", f"--workdir={W(t)}",
                                     "--config.train.batch_sise=3"), W(t)), 2,
        "unknown config field --config.train.batch_sise"),
    "process: keep_checkpoints=0": (
        lambda t, f: (lambda: script("train.py", f"--config={M}", f"--workdir={W(t)}",
                                     "--config.train.keep_checkpoints=0"), W(t)), 2,
        "keep_checkpoints=0 must be >= 1"),
    "process: learning_rate=nan": (
        lambda t, f: (lambda: script("train.py", f"--config={M}", f"--workdir={W(t)}",
                                     "--config.optim.learning_rate=nan"), W(t)), 2,
        "config.optim.learning_rate=nan must be finite"),
    "process: positional argument": (
        lambda t, f: (lambda: script("train.py", f"--config={M}", f"--workdir={W(t)}", "oops"),
                      W(t)), 2, "unexpected arguments ['oops']"),
    "process: evaluate --crops=abc": (
        lambda t, f: (lambda: script("evaluate.py", f"--workdirs={f}", "--crops=abc",
                                     f"--output_dir={t / 'eval'}"), t / "eval"), 2,
        "--crops=abc: give 1, 10 and/or 144"),
    "process: batch 60 on 8 devices": (
        lambda t, f: (lambda: script("train.py", f"--config={M}", f"--workdir={W(t)}",
                                     devices=8), W(t)), 2,
        "config.train.batch_size=60 is the GLOBAL batch"),
}
SLOW = {"process: learning_rate=nan", "process: positional argument", "process: evaluate --crops=abc",
        "process: batch 60 on 8 devices"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c
                                  for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, finished, capsys,
                                                  monkeypatch):
  monkeypatch.delenv("BN_INCEPTION_DEBUG", raising=False)
  make, status, expected = CASES[case]
  TALLY["cases"] += 1
  run, watched = make(tmp_path, finished)
  before = snapshot(watched)
  rc = run()
  out, err = capsys.readouterr()
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert rc == status, f"exit status {rc}:\n{err[-3000:]}"
  assert len(errors) == 1, err[-3000:]
  assert expected in err[err.index("error:"):], err[-3000:]  # (a list may follow the line)
  assert "Traceback" not in err + out
  assert snapshot(watched) == before, "the workdir changed"
  TALLY["clean"] += 1


def test_a_failed_first_launch_leaves_nothing_and_its_retry_may_change_any_field(tmp_path,
                                                                                  capsys):
  """A corrupt JPEG in the first batch: nothing written; the suggested fix is accepted."""
  root = corrupt_jpeg_folder(tmp_path)
  args = [f"--config.data.train_dir={root}", f"--config.data.eval_dir={root}", *IMAGENET]
  assert train(W(tmp_path), *args, config="configs/imagenet_tiny.py") == 2
  assert not W(tmp_path).exists()
  assert train(W(tmp_path), *args, "--config.data.skip_corrupt_images=True",
               "--config.optim.learning_rate=0.1", config="configs/imagenet_tiny.py") == 0
  assert sorted(p.name for p in (W(tmp_path) / "checkpoints").iterdir()) == ["2"]
  capsys.readouterr()


def test_leftovers_are_removed_only_from_a_workdir_the_launch_created(tmp_path):
  from bn_inception.workdir import remove_launch_leftovers
  new = tmp_path / "new"
  (new / "checkpoints").mkdir(parents=True)
  (new / ".lock").write_text("pid")
  remove_launch_leftovers(str(new))
  assert not new.exists()
  kept = tmp_path / "kept"
  (kept / "checkpoints").mkdir(parents=True)
  (kept / ".lock").write_text("pid")
  (kept / "config.json").write_text("{}")
  (kept / "notes.txt").write_text("mine")
  remove_launch_leftovers(str(kept))
  assert sorted(p.name for p in kept.iterdir()) == ["config.json", "notes.txt"]
  done = tmp_path / "done"
  (done / "checkpoints" / "20").mkdir(parents=True)
  (done / ".lock").write_text("pid")
  remove_launch_leftovers(str(done))  # a run with a checkpoint: untouched
  assert (done / ".lock").exists() and (done / "checkpoints" / "20").is_dir()


def test_disk_full_is_recognised_through_wrapping(tmp_path):
  inner = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f"))
  try:
    try:
      raise inner
    except OSError as e:
      raise ValueError("commit failed") from e
  except ValueError as wrapped:
    assert cli.disk_full(wrapped) and cli._path_written(wrapped) == str(tmp_path / "f")
  assert cli.disk_full(ValueError('RESOURCE_EXHAUSTED: Failed writing: "/x/y": No space '
                                  "left on device [os_error_code='28']"))
  assert not cli.disk_full(ValueError("disk quota: fine")) and not cli.disk_full(
      OSError(errno.EACCES, "Permission denied"))


def _touched_files(workdir: Path) -> dict:
  """Bytes and mtime of each file a launch into an existing workdir could write first
  (the snapshot above leaves the lock and the log out)."""
  names = (".lock", "log.txt", "metrics.jsonl", "config.json")
  return {n: ((workdir / n).read_bytes(), (workdir / n).stat().st_mtime_ns)
          for n in names if (workdir / n).exists()}


@pytest.mark.parametrize("case", ["num_steps below the checkpoint",
                                  "other architecture's checkpoint"])
def test_a_refused_resume_leaves_even_the_lock_and_the_log_alone(case, tmp_path, finished,
                                                                 capsys, monkeypatch):
  """Its 'Nothing was changed' is decided before the lock is taken and the log opened."""
  monkeypatch.delenv("BN_INCEPTION_DEBUG", raising=False)
  make, status, expected = CASES[case]
  run, work = make(tmp_path, finished)
  before = _touched_files(work)
  assert {".lock", "log.txt", "metrics.jsonl"} <= set(before)
  time.sleep(0.01)  # a rewrite would show in the mtimes
  assert run() == status
  err = capsys.readouterr().err
  assert expected in err and "Nothing was changed" in err
  assert _touched_files(work) == before
