import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Scripts the tests start (scripts/*.py, sweep members) import this checkout, also
# where another copy of the package is installed (pytest.ini's pythonpath only
# reaches this process).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
