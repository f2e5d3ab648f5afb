"""The one override checker/parser (bn_inception/overrides.py) and config-file loading
(bn_inception/config_files.py), against ml_collections' config_flags as the reference."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from bn_inception import cli, config_files, overrides, sweep_runner
from bn_inception.config_files import ConfigFileError
from bn_inception.overrides import OverrideError
from bn_inception.sweep import Member, SweepError

REPO = Path(__file__).resolve().parents[1]


def base():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.train = ml_collections.ConfigDict({"batch_size": 32, "num_steps": 1000})
  c.optim = ml_collections.ConfigDict({"learning_rate": 0.1, "nesterov": False})
  c.data = ml_collections.ConfigDict({"dir": "/data", "mean": (0.0, 0.5), "names": ("a",),
                                      "extra": (), "unset": None})
  c.model = ml_collections.ConfigDict({"hidden": (16, 16)})
  c.lock()
  return c


def config_flags_value(field, text):
  """What config_flags itself sets for --config.<field>=<text> (the reference)."""
  fv = flags.FlagValues()
  argv = ["prog", f"--config.{field}={text}"]
  config_flags.DEFINE_config_dict("config", base(), flag_values=fv, sys_argv=argv)
  fv(argv)
  value = fv.config
  for part in field.split("."):
    value = value[part]
  return value


# field, text, and the value it sets (config_flags, the reference, must set the same).
PARSED = [
    ("train.batch_size", "3", 3),
    ("train.batch_size", "-3", -3),                 # negative numbers
    ("train.batch_size", "0x10", 16),
    ("optim.learning_rate", "2", 2.0),              # a float field takes an int
    ("optim.learning_rate", "1e-3", 1e-3),          # scientific notation
    ("optim.learning_rate", "-0.5", -0.5),
    ("optim.learning_rate", "2.5E+2", 250.0),
    ("optim.nesterov", "false", False),
    ("optim.nesterov", "True", True),
    ("optim.nesterov", "1", True),
    ("seed", "7", 7),
    ("data.dir", "/a b=c", "/a b=c"),               # spaces and '=' stay in a string
    ("data.dir", "3", "3"),                         # a str field keeps digits as text
    ("data.dir", "", ""),
    ("model.hidden", "(8, 8)", (8, 8)),
    ("model.hidden", "[4,5]", (4, 5)),
    ("model.hidden", "8", (8,)),                    # a bare value is a one-element tuple
    ("model.hidden", "(-1,)", (-1,)),
    ("data.mean", "(0.25, 1)", (0.25, 1)),          # a float tuple takes ints
    ("data.names", "('x', 'y=z')", ("x", "y=z")),
    ("data.names", "x", ("x",)),
    ("data.extra", "(1, 'a', 2.5)", (1, "a", 2.5)),  # an empty tuple takes any elements
]

# field, text, and a regex of the one-line refusal.
REFUSED = [
    ("train.batch_size", "abc", r"^--config\.train\.batch_size=abc: wrong type: "
                                r"train\.batch_size holds an int \(default 32\), and 'abc' is not one"),
    ("train.batch_size", "2.5", r"holds an int .* '2\.5' is not one"),
    ("train.batch_size", "1e3", r"holds an int .* '1e3' is not one"),   # ints are not floats
    ("train.batch_size", "true", r"holds an int"),
    ("optim.learning_rate", "fast", r"holds a float \(default 0\.1\), and 'fast' is not one"),
    ("optim.nesterov", "yes", r"holds a bool \(default False\), and 'yes' is not one"),
    ("optim.nesterov", "2", r"holds a bool"),
    ("model.hidden", "(16,abc)", r"holds a tuple of int \(default \(16, 16\)\), and its element "
                                 r"'\(16,abc\)' is a str"),
    ("model.hidden", "(1.5, 2)", r"its element 1\.5 is a float"),
    ("model.hidden", "(True,)", r"its element True is a bool"),
    ("model.hidden", "(1, 2", r"^--config\.model\.hidden=\(1, 2: Error while parsing"),
    ("data.mean", "('a',)", r"its element 'a' is a str"),
    ("data.names", "(1,)", r"holds a tuple of str .* its element 1 is an int"),
    ("train.batch_sise", "3", r"^unknown config field --config\.train\.batch_sise \(did you "
                              r"mean train\.batch_size"),
    ("trian.batch_size", "3", r"did you mean train\.batch_size"),
    ("train.batch_size.x", "3", r"^unknown config field --config\.train\.batch_size\.x"),
    ("nothing_like_it", "3", r"^unknown config field --config\.nothing_like_it; only"),
    ("train", "3", r"^--config\.train=3: train is a whole section; set its fields one by one "
                   r"\(e\.g\. --config\.train\.batch_size\)"),
    ("data.unset", "3", r"data\.unset is None in the config"),
]


@pytest.mark.parametrize("field, text, expected", PARSED)
def test_parse_as_config_flags_does(field, text, expected):
  got = overrides.parse(base(), field, text, flag="--config.")
  assert got == expected and type(got) is type(expected)
  reference = config_flags_value(field, text)
  assert reference == got and type(reference) is type(got)
  # Applied, the config holds what config_flags would leave in it.
  assert overrides.apply_text(base(), [f"{field}={text}"]).to_dict() == \
      overrides.apply(base(), {field: reference}).to_dict()


@pytest.mark.parametrize("field, text, expected", REFUSED)
def test_bad_text_is_refused_in_one_line(field, text, expected):
  with pytest.raises(OverrideError) as e:
    overrides.parse(base(), field, text, flag="--config.")
  message = str(e.value)
  assert re.search(expected, message) and "\n" not in message, message


# field, a Python value (a sweep's), and its command-line text.
WRITTEN = [
    ("optim.learning_rate", 2, "2"),
    ("optim.learning_rate", 0.25, "0.25"),
    ("optim.learning_rate", 1e-10, "1e-10"),
    ("train.batch_size", -4, "-4"),
    ("optim.nesterov", True, "true"),
    ("model.hidden", [8, 8], "(8, 8)"),
    ("data.names", ("a b", "c=d"), "('a b', 'c=d')"),
    ("data.dir", "x y=z", "x y=z"),
]

# field, a Python value, and a regex of the refusal.
WRONG_VALUES = [
    ("train.batch_size", 2.5, r"^train\.batch_size=2\.5: wrong type: train\.batch_size holds an "
                              r"int \(default 32\), not a float\.$"),
    ("train.batch_size", True, r"holds an int .*, not a bool"),      # bool is not an int
    ("optim.nesterov", 1, r"holds a bool .*, not an int"),
    ("optim.learning_rate", "0.1", r"holds a float .*, not a str"),
    ("data.dir", 3, r"holds a str .*, not an int"),
    ("model.hidden", ("a",), r"holds a tuple of int .*, not a tuple of str"),
    ("model.hidden", 8, r"holds a tuple of int .*, not an int"),
    ("data.mean", (float("inf"),), r"its element '\(inf,\)' is a str"),  # no literal for inf
    ("optim.learnin_rate", 0.1, r"^unknown config field optim\.learnin_rate \(did you mean "
                                r"optim\.learning_rate"),
    ("optim", 1, r"optim is a whole section"),
]


@pytest.mark.parametrize("field, value, expected", WRITTEN)
def test_python_values_are_written_as_on_the_command_line(field, value, expected):
  text = overrides.check(base(), field, value)
  assert text == expected == overrides.cli_value(value)
  assert config_flags_value(field, text) == overrides._normalize(value)


@pytest.mark.parametrize("field, value, expected", WRONG_VALUES)
def test_wrong_python_values_are_refused(field, value, expected):
  with pytest.raises(OverrideError) as e:
    overrides.check(base(), field, value)
  assert re.search(expected, str(e.value)), str(e.value)


def test_labels():
  assert [overrides.format_label_value(v) for v in (0.5, 1.0, 1e-4, True, (8, 8), "relu")] == \
      ["0.5", "1", "0.0001", "true", "8x8", "relu"]


def test_sections_a_caller_allows():
  c = base()
  with pytest.raises(OverrideError, match=r"^--override=model\.hidden=\(8,\): only data\.<field> "
                                          r"and train\.<field> can be overridden here"):
    overrides.apply_text(c, ["data.dir=/x", "model.hidden=(8,)"], sections=("data", "train"),
                         flag="--override=")
  assert c.data.dir == "/data"  # every item is checked before any is set
  with pytest.raises(OverrideError, match=r"--override=data\.dir: write <field>=<value>"):
    overrides.apply_text(c, ["data.dir"], flag="--override=")
  got = overrides.apply_text(c, ["data.dir=/x", "train.batch_size=8", "data.dir=/y"],
                             sections=("data", "train"))
  assert (got.data.dir, got.train.batch_size) == ("/y", 8)
  # config.json has lists, not tuples: the field keeps its type.
  saved = ml_collections.ConfigDict(json.loads(base().to_json()))
  overrides.apply_text(saved, ["data.mean=(1, 2.5)"])
  assert saved.data.mean == [1, 2.5]


@pytest.mark.parametrize("argv, expected", [
    (["--config.train.batch_size=7", "--config.optim.nesterov"], None),
    (["--noconfig.optim.nesterov", "--config.train.batch_size", "7"], None),  # separate value
    (["--config.model.hidden=16", "--config.model.hidden=32"], None),  # repeated tuple flags
    (["-config.seed=3", "--other=--config.seed=x"], None),
    (["--", "--config.bogus=1"], None),           # after '--' nothing is a flag
    (["--config.train.batch_size", "abc"], r"^--config\.train\.batch_size=abc: wrong type"),
    (["--noconfig.train.batch_size"], r"^--noconfig\.train\.batch_size: wrong type: .* not a bool"),
    (["--config.optim.learnin_rate=1"], r"^unknown config field --config\.optim\.learnin_rate"),
    (["--config.model.hidden=16", "--config.model.hidden=x"], r"its element 'x' is a str"),
])
def test_command_line_forms(argv, expected):
  if expected is None:
    overrides.check_flags(base(), argv)
  else:
    with pytest.raises(OverrideError, match=expected):
      overrides.check_flags(base(), argv)


def config_file_flag(argv):
  """A fresh `--config` file flag, checked as cli.parse_flags checks it, then parsed."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  cli._check_config_flags(fv, argv)
  fv(argv)
  return fv.config


def test_command_line_checks_then_config_flags_applies():
  argv = ["train", "--config=configs/mnist_fig1.py:no_bn", "--config.model.hidden_units=(8,8)",
          "--config.optim.learning_rate=1", "--noconfig.bn.enabled", "--config.data.data_dir=/a b=c"]
  config = config_file_flag(argv)
  assert config.model.hidden_units == (8, 8) and config.optim.learning_rate == 1.0
  assert config.data.data_dir == "/a b=c"
  with pytest.raises(OverrideError, match=r"unknown config field --config\.train\.batch_sise "
                                          r"\(did you mean train\.batch_size"):
    config_file_flag(["train", "--config=configs/mnist_fig1.py", "--config.train.batch_sise=3"])
  # A DEFINE_config_dict flag (scripts/data_throughput.py's --data) is checked too.
  fv = flags.FlagValues()
  argv = ["prog", "--data.train.batch_size=abc"]
  config_flags.DEFINE_config_dict("data", base(), flag_values=fv, sys_argv=argv)
  with pytest.raises(OverrideError, match=r"^--data\.train\.batch_size=abc: wrong type"):
    cli._check_config_flags(fv, argv)


def _verdict(message: str) -> str:
  """The problem a message names, without the caller's way of writing the override."""
  return re.search(r"wrong type: .*?\(default .*?\)|\(did you mean .*?\)[^.]*\.", message).group(0)


@pytest.mark.parametrize("field, text", [
    ("train.batch_size", "abc"),
    pytest.param("train.batch_sise", "3", marks=pytest.mark.slow)])  # a process each
def test_the_three_callers_give_the_same_verdict(tmp_path, field, text):
  with pytest.raises(OverrideError) as cli_error:
    config_file_flag(["train", "--config=configs/mnist_fig1.py", f"--config.{field}={text}"])
  with pytest.raises(SweepError) as sweep_error:  # 'abc' as a str, '3' as an int
    value = int(text) if text.isdigit() else text
    sweep_runner.resolve(Member("m", "configs/mnist_fig1.py", {field: value}))
  # scripts/evaluate.py on a workdir whose config.json is that config.
  from configs import mnist_fig1
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(mnist_fig1.get_config().to_json())
  proc = subprocess.run([sys.executable, "scripts/evaluate.py", f"--workdirs={workdir}",
                         f"--override={field}={text}", f"--output_dir={tmp_path / 'eval'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  verdicts = {_verdict(str(cli_error.value)), _verdict(str(sweep_error.value)),
              _verdict(errors[0][len("error: "):])}
  assert len(verdicts) == 1, verdicts
  assert all(f"{field}=" in m or f"field {flag}{field} " in m for m, flag in [
      (str(cli_error.value), "--config."), (str(sweep_error.value), ""), (errors[0], "--override=")])


# ----------------------------------------------------------------------- config files


BROKEN_FILES = {
    "syntax": ("import ml_collections\n\ndef get_config():\n  c = ml_collections.ConfigDict(\n"
               "  return c\n", r"^{f}:4: SyntaxError: '\(' was never closed$"),
    "indentation": ("def get_config():\nreturn 1\n", r"^{f}:2: IndentationError: expected an "
                                                     r"indented block"),
    "name": ("import ml_collections\n\ndef get_config(arg):\n  c = ml_collections.ConfigDict()\n"
             "  c.seed = seeed\n  return c\n", r"^{f}:5: NameError: name 'seeed' is not defined$"),
    "import": ("import ml_collections\nfrom configs import no_such_config\n",
               r"^{f}:2: ImportError: cannot import name 'no_such_config' from 'configs'"),
    "module": ("import no_such_module_xyz\n",
               r"^{f}:1: ModuleNotFoundError: No module named 'no_such_module_xyz'$"),
    "raises in get_config": ("def get_config(arg):\n  raise ValueError(f'no run {arg!r}')\n",
                             r"^{f}:2: ValueError: no run 'big'$"),
    "raises in a module it calls": (
        "from configs import mnist_fig1\n\ndef get_config(arg):\n  return mnist_fig1.get_config("
        "arg)\n", r"^{f}:4 \(raised at configs/mnist_fig1\.py:\d+\): ValueError: "
                  r"configs/mnist_fig1\.py takes 'bn' or 'no_bn', not 'big'"),
    "no get_config": ("X = 1\n", r"^{f} defines no get_config\(\) function\.$"),
    "returns None": ("def get_config(arg):\n  pass\n",
                     r"^{f}: get_config\(\) returned NoneType, not an ml_collections"),
    "wrong arity": ("def get_config():\n  return None\n",
                    r"^{f}: TypeError: get_config\(\) takes 0 positional arguments but 1"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_config_file_that_fails_is_one_line_naming_its_line(tmp_path, case, monkeypatch):
  source, expected = BROKEN_FILES[case]
  monkeypatch.chdir(REPO)  # configs/ importable, paths shown relative
  monkeypatch.syspath_prepend(str(REPO))
  path = tmp_path / "broken.py"
  path.write_text(source)
  with pytest.raises(ConfigFileError) as e:
    config_files.load_config(f"{path}:big")
  message = str(e.value)
  assert re.search(expected.format(f=re.escape(str(path))), message), message
  assert "\n" not in message and "Traceback" not in message
  # The same line from the command line's check, before config_flags sees the file.
  with pytest.raises(ConfigFileError, match=re.escape(message)):
    config_file_flag(["train", f"--config={path}:big"])
  # And from a sweep whose member uses it.
  with pytest.raises(SweepError, match=re.escape(message)):
    sweep_runner.resolve(Member("m", f"{path}:big"))


def test_missing_config_file(tmp_path):
  with pytest.raises(ConfigFileError, match=r"^config file configs/nope\.py not found \(from "):
    config_files.load_config("configs/nope.py")


@pytest.mark.parametrize("source, expected", [
    ("def get_sweep():\n  return [Member('a', 'configs/mnist_fig1.py')\n",
     r"^{f}:3: SyntaxError: '\[' was never closed$"),
    ("def get_sweep():\n  return [Membr('a', 'configs/mnist_fig1.py')]\n",
     r"^{f}:3: NameError: name 'Membr' is not defined"),
    ("from bn_inception.sweep import Memer\n", r"^{f}:2: ImportError: cannot import name 'Memer'"),
    ("def get_sweep():\n  return product('seed', [1]) * product('seed', [2])\n",
     r"^{f}:3 \(raised at bn_inception/sweep\.py:\d+\): SweepError: product of two axes that "
     r"both set seed"),
])
def test_sweep_file_that_fails_is_one_line_naming_its_line(tmp_path, source, expected,
                                                            monkeypatch):
  monkeypatch.chdir(REPO)
  path = tmp_path / "s.py"
  path.write_text("from bn_inception.sweep import Member, product\n" + source)
  with pytest.raises(SweepError) as e:
    sweep_runner.load_sweep(str(path))
  message = str(e.value)
  assert re.search(expected.format(f=re.escape(str(path))), message), message


@pytest.mark.parametrize("script, args", [
    ("scripts/train.py", ["--workdir={tmp}/run", "--config={broken}"]),
    pytest.param("scripts/sweep.py", ["--workdir={tmp}/run", "--sweep={broken}"],
                 marks=pytest.mark.slow),  # in-process above; its process starts JAX first
])
def test_broken_file_from_the_command_line(tmp_path, script, args):
  """The real entry points: exit status 2, one error line, no traceback, nothing written."""
  broken = tmp_path / "broken.py"
  broken.write_text("import ml_collections\n\ndef get_config():\n  return ml_collections."
                    "ConfigDict(\n\ndef get_sweep():\n  return []\n")
  proc = subprocess.run([sys.executable, script] +
                        [a.format(tmp=tmp_path, broken=broken) for a in args],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert errors == [f"error: {broken}:4: SyntaxError: '(' was never closed"], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()
