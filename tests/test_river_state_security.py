"""A crafted River checkpoint never runs code: hand-written exploits and a fuzz test.

The threat: whoever can write the checkpoint folder rewrites ``state.json`` and the
SHA-256 manifest alike. Loading must then either restore a model of the configured shape
built only from allowlisted types, or raise :class:`CheckpointError` — and call nothing
but River's, NumPy's and the codec's own code on the way (watched with ``sys.setprofile``
and an audit hook).
"""

from __future__ import annotations

import copy
import gc
import math
import os
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import river
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import anomaly, compose, linear_model, optim, preprocessing
from river_exploits import eval_chain, g, ref

from operators.river import RiverOperator
from operators.river import shape as river_shape
from operators.river import state as river_state
from operators.river.state import decode, encode, register_callable
from stream import CheckpointError
from stream import state as codec

ROOT = Path(__file__).resolve().parents[1]
RIVER_DIR = str(Path(river.__file__).parent)
# code that may run while a checkpoint loads: River, NumPy, the codec, and the standard
# library modules the codec's fixed constructors live in
ALLOWED_DIRS = (RIVER_DIR, str(Path(np.__file__).parent), str(ROOT / "operators" / "river" / "state.py"),
                str(ROOT / "operators" / "river" / "shape.py"), str(ROOT / "operators" / "river" / "operator.py"),
                str(ROOT / "stream" / "errors.py"), str(ROOT / "stream" / "operator.py"))
STDLIB = Path(sysconfig.get_paths()["stdlib"])
ALLOWED_STDLIB = {str(STDLIB / f) for f in ("collections/__init__.py", "functools.py", "random.py", "statistics.py",
                                            "copy.py", "inspect.py", "enum.py", "abc.py", "typing.py", "types.py",
                                            "importlib/__init__.py", "re/__init__.py", "_collections_abc.py",
                                            # a River module imported on first use defines functools.cached_property
                                            # attributes, each of which makes a threading.RLock
                                            "threading.py")}
FROZEN_ALLOWED = {"<frozen abc>", "<frozen _collections_abc>", "<frozen importlib._bootstrap>",
                  "<frozen importlib._bootstrap_external>"}
FORBIDDEN_C = {eval, exec, compile, __import__, open, os.system, os.popen, getattr(os, "execv", None),
               getattr(os, "posix_spawn", None)} - {None}
FORBIDDEN_EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "open",
                    "socket.", "ctypes.", "pickle.find_class", "marshal.loads", "compile", "code.__new__",
                    "function.__new__", "builtins.input", "webbrowser.open")

_watch: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if not _watch:
        return
    if event == "exec" and getattr(args[0], "co_filename", "").startswith(RIVER_DIR):
        return  # a River module imported on first use: River's own code
    if event == "import" and str(args[0]).split(".")[0] in ("river", "numpy"):
        return
    if event == "exec" or event == "import" or event.startswith(FORBIDDEN_EVENTS):
        _watch[-1].append(f"audit event {event} {str(args)[:200]}")


sys.addaudithook(_audit)


def _allowed_file(name: str) -> bool:
    return name.startswith(ALLOWED_DIRS) or name in ALLOWED_STDLIB or name in FROZEN_ALLOWED


def watched(fn, *args):
    """Run ``fn(*args)``; returns (result or exception, calls outside the allowlist)."""
    foreign: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and not _allowed_file(frame.f_code.co_filename):
            foreign.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")
        elif event == "c_call" and arg in FORBIDDEN_C:
            foreign.append(f"builtin {arg!r}")

    _watch.append(foreign)
    gc.disable()  # no collector callbacks (the test runner's) in the watched calls
    sys.setprofile(profile)
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - judged by the caller
        out = exc
    finally:
        sys.setprofile(None)
        gc.enable()
        _watch.pop()
    return out, foreign


@pytest.fixture(autouse=True)
def no_shell(monkeypatch, tmp_path):
    """Anything that reaches os.system or subprocess fails the test, whatever the profile says."""
    ran: list = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a) or 0)
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: ran.append(a))
    yield tmp_path
    assert not ran, f"a checkpoint ran a command: {ran}"


# -- the copyreg exploit ------------------------------------------------------------------------
def copyreg_exploit(sentinel: Path, fmt: str = "hebbstream-river-state/2") -> dict:
    """A pipeline of FuncTransformers whose functions walk from a River function to eval.

    With the format-1 decoder this loaded fine and wrote ``sentinel`` on the first event:
    ``copyreg.__newobj__`` made ``operator.methodcaller`` objects from a class that was
    only checked as a *value*, and ``partial(getattr, sigmoid, '__globals__')`` reached
    the builtins.
    """
    funcs = eval_chain(sentinel)
    names = [f"F{i}" for i in range(4)]
    objects = [
        {"~": "new", "c": "river.compose.pipeline:Pipeline", "s": {"steps": ref(1), "_last_step_cached": ref(2)}},
        {"~": "o", "f": "collections:OrderedDict", "d": [[n, ref(3 + i)] for i, n in enumerate(names)] +
         [["HalfSpaceTrees", ref(2)]]},
        {"~": "new", "c": "river.anomaly.hst:HalfSpaceTrees", "s": {}},
        *({"~": "new", "c": "river.compose.func:FuncTransformer", "s": {"func": ref(7 + i)}} for i in range(4)),
        *funcs,
    ]
    return {"format": fmt, "root": ref(0), "objects": objects}


def _new_vocabulary_exploits(sentinel: Path) -> dict[str, dict]:
    """The same chain spelt in format 2's own node types, each way the file could name a callable."""
    hst = {"~": "obj", "c": "river.anomaly.hst:HalfSpaceTrees", "s": {}}
    code = f"open({str(sentinel)!r}, 'w').write('pwned')"

    def pipeline_with(func_node):
        return {"format": river_state.FORMAT, "root": ref(0), "objects": [
            {"~": "obj", "c": "river.compose.pipeline:Pipeline", "s": {"steps": ref(1), "_last_step_cached": ref(2)}},
            {"~": "OrderedDict", "v": [["F", ref(3)], ["HalfSpaceTrees", ref(2)]]}, hst,
            {"~": "obj", "c": "river.compose.func:FuncTransformer", "s": {"func": ref(4)}}, func_node]}

    return {
        "reconstructor as a class": pipeline_with({"~": "obj", "c": "copyreg:_reconstructor", "a": ["x"]}),
        "methodcaller as a class": pipeline_with({"~": "obj", "c": "operator:methodcaller", "a": ["get", "eval"]}),
        "call of a non-constructed class": pipeline_with({"~": "call", "c": "river.compose.func:FuncTransformer",
                                                          "a": [g("builtins:eval")]}),
        "getattr in a partial": pipeline_with({"~": "partial", "f": g("builtins:getattr"),
                                               "a": [g("river.utils.math:sigmoid"), "__globals__"], "k": {}}),
        "eval as a value": pipeline_with({"~": "partial", "f": g("builtins:eval"), "a": [code], "k": {}}),
        "a method named by the file": pipeline_with({"~": "m", "o": ref(2), "n": "__init__"}),
        "a classmethod named by the file": pipeline_with({"~": "cm", "c": "river.anomaly.hst:HalfSpaceTrees",
                                                         "n": "_unit_test_params"}),
        "a dunder attribute": pipeline_with({"~": "obj", "c": "river.stats.mean:Mean",
                                             "s": {"__class__": g("builtins:dict")}}),
        "a River class outside the allowlist": pipeline_with({"~": "obj", "c": "river.stream.cache:Cache", "s": {}}),
    }


def _configured():
    return RiverOperator(preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=1), features=["x"])


def test_copyreg_exploit_runs_nothing(no_shell):
    sentinel = no_shell / "pwned"
    for fmt in ("hebbstream-river-state/1", river_state.FORMAT):
        tree = codec.loads(*codec.dumps(copyreg_exploit(sentinel, fmt)))
        out, foreign = watched(decode, tree)
        assert isinstance(out, CheckpointError) and not foreign, (out, foreign)
        op = _configured()
        out, foreign = watched(op.load_state_dict, {"model": tree, "features": ["x"], "outputs": None})
        assert isinstance(out, CheckpointError) and "River[HalfSpaceTrees]" in str(out) and not foreign
    for name, tree in _new_vocabulary_exploits(sentinel).items():
        out, foreign = watched(decode, codec.loads(*codec.dumps(tree)))
        assert isinstance(out, CheckpointError), (name, out)
        assert not foreign, (name, foreign)
    assert not sentinel.exists()


def _double(x):
    return {k: 2 * v for k, v in x.items()}


def _triple(x):
    return {k: 3 * v for k, v in x.items()}


register_callable("tests.security.double", _double)
register_callable("tests.security.triple", _triple)


def test_user_callables_are_refused_on_save_unless_registered():
    def local(x):
        return x

    for func in (local, lambda x: x, math.sqrt, os.getcwd):
        op = RiverOperator(compose.FuncTransformer(func) | anomaly.HalfSpaceTrees(seed=1), features=["x"])
        step = list(op.model.steps)[0]  # River names a FuncTransformer step after its function
        with pytest.raises(CheckpointError, match=r"River\[HalfSpaceTrees\]: cannot checkpoint " +
                           re.escape(f"model[{step!r}].func: ") + ".*register_callable"):
            op.state_dict()
    op = RiverOperator(compose.FuncTransformer(_double) | anomaly.HalfSpaceTrees(seed=1), features=["x"])
    state = codec.loads(*codec.dumps(op.state_dict()))
    again = RiverOperator(compose.FuncTransformer(_double) | anomaly.HalfSpaceTrees(seed=1), features=["x"])
    again.load_state_dict(state)
    assert again.model["_double"].func is _double
    # the file cannot swap in another registered function: the pipeline configures _double
    swapped = codec.loads(*codec.dumps(state))
    swapped["model"] = codec.loads(*codec.dumps(swapped["model"]))
    for entry in swapped["model"]["objects"]:
        if isinstance(entry, dict) and entry.get("s", {}).get("func") == g("tests.security.double"):
            entry["s"]["func"] = g("tests.security.triple")
    with pytest.raises(CheckpointError, match=r"model\['_double'\]\.func is function"):
        again.load_state_dict(swapped)
    with pytest.raises(ValueError, match="already registered"):
        register_callable("tests.security.double", _triple)


def test_a_checkpoint_of_another_configuration_is_refused():
    op = RiverOperator(preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01)),
                       features=["x"], target="y")
    state = codec.loads(*codec.dumps(op.state_dict()))
    for other, message in [
        (preprocessing.MinMaxScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01)), "has steps"),
        (preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.1)),
         r"model\['LinearRegression'\]\.optimizer\.lr\.learning_rate is 0\.01 in the checkpoint, 0\.1"),
        (preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.Adam(0.01)),
         r"\.optimizer is a river\.optim\.sgd\.SGD in the checkpoint, a river\.optim\.adam\.Adam"),
        (preprocessing.StandardScaler(with_std=False) | linear_model.LinearRegression(optimizer=optim.SGD(0.01)),
         r"model\['StandardScaler'\]\.with_std is True in the checkpoint, False"),
    ]:
        with pytest.raises(CheckpointError, match=r"River\[LinearRegression\]: the model in the checkpoint "
                                                  r"does not match the configured model: .*" + message):
            RiverOperator(other, features=["x"], target="y").load_state_dict(state)


# -- fuzz ---------------------------------------------------------------------------------------
def _trained(model, learn):
    rng = np.random.default_rng(0)
    for i in range(30):
        x = {"x": float(rng.normal()), "z": float(i % 5)}
        learn(model, x, x["x"] > 0)
    return model


BASES = {
    "scaler|logreg": (lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.Adam(0.05)), lambda m, x, y: m.learn_one(x, y)),
    "hst": (lambda: anomaly.HalfSpaceTrees(n_trees=2, height=3, window_size=10, seed=1),
            lambda m, x, y: m.learn_one(x)),
    "pa": (lambda: linear_model.PAClassifier(), lambda m, x, y: m.learn_one(x, y)),
    "projector": (lambda: preprocessing.GaussianRandomProjector(n_components=3, seed=1),
                  lambda m, x, y: m.learn_one(x)),
    "func|minmax": (lambda: compose.FuncTransformer(_double) | preprocessing.MinMaxScaler(),
                    lambda m, x, y: m.learn_one(x)),
}
TREES = {name: codec.loads(*codec.dumps(encode(_trained(make(), learn)))) for name, (make, learn) in BASES.items()}


def _strings(obj, out):
    if isinstance(obj, str):
        out.add(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _strings(k, out)
            _strings(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _strings(v, out)
    return out


NAMES = sorted(set().union(*(_strings(t, set()) for t in TREES.values())) | {
    "os:system", "builtins:eval", "builtins:getattr", "builtins:__import__", "copyreg:_reconstructor",
    "copyreg:__newobj__", "operator:methodcaller", "operator:attrgetter", "river.compose.func:FuncTransformer",
    "river.stream.cache:Cache", "river.datasets.phishing:Phishing", "subprocess:Popen", "posix:system",
    "river.utils.math:sigmoid", "importlib:import_module", "river.compose.pipeline:functools.partial",
    "__class__", "__init__", "__reduce__", "__globals__", "__setstate__", "__dict__", "learn_one", "gauss",
    "clone", "_calc_tau_1", "hebbstream-river-state/1", "o", "new", "~"})
TAGS = ["r", "t", "frozenset", "np", "dtype", "g", "d", "set", "defaultdict", "Counter", "OrderedDict", "deque",
        "oa", "random", "generator", "randomstate", "partial", "m", "cm", "iter", "obj", "call", "slots", "o", "new"]

scalars = st.one_of(st.sampled_from(NAMES), st.integers(-3, 40), st.sampled_from([0, 1, -1, 2**40, 10**30]),
                    st.floats(allow_nan=True), st.none(), st.booleans(), st.binary(max_size=8),
                    st.sampled_from([np.zeros(3), np.array(1.5), np.array([["a"]]), np.array(3, dtype=np.int8)]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.fixed_dictionaries({"~": st.sampled_from(TAGS)}, optional={
        "i": inner, "v": inner, "c": inner, "f": inner, "a": st.lists(inner, max_size=3), "s": inner,
        "n": inner, "o": inner, "k": inner, "l": inner, "d": inner, "shape": inner, "maxlen": inner}),
    st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)), max_leaves=6)


def _slots(obj, out):
    """Every (container, key) in the tree, to mutate in place."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            _slots(v, out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            _slots(v, out)
    return out


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(TREES)))
    tree = copy.deepcopy(TREES[name])
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(tree, [])
        parent, key = slots[draw(st.integers(0, len(slots) - 1))]
        how = draw(st.sampled_from(["replace", "replace", "delete", "swap", "wrap", "duplicate"]))
        if how == "replace":
            parent[key] = draw(values)
        elif how == "delete":
            del parent[key]
        elif how == "swap":  # move another subtree here: wrong nesting, wrong kind
            other, other_key = slots[draw(st.integers(0, len(slots) - 1))]
            parent[key] = copy.deepcopy(other[other_key])
        elif how == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"~": "t", "v": [parent[key]]},
                                                {"~": "r", "i": parent[key]}, {"x": parent[key]}]))
        elif isinstance(tree.get("objects"), list) and tree["objects"]:
            objects = tree["objects"]
            objects.append(copy.deepcopy(objects[draw(st.integers(0, len(objects) - 1))]))
    return name, tree


def _only_allowed(obj) -> None:
    """The restored object graph holds nothing the encoder would refuse."""
    encode(obj)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated())
def test_mutated_checkpoints_restore_a_configured_model_or_are_refused(case):
    name, tree = case
    make, _ = BASES[name]
    op = RiverOperator(make(), features=["x", "z"], target="y")
    out, foreign = watched(op.load_state_dict, {"model": tree, "features": ["x", "z"], "outputs": None})
    assert not foreign, f"loading called code outside the allowlist: {foreign[:5]}"
    if isinstance(out, Exception):
        assert isinstance(out, CheckpointError), f"{type(out).__name__}: {out}"
        assert str(out).startswith(op.name), str(out)
        return
    assert river_shape.difference(make(), op.model) is None
    _only_allowed(op.model)


def test_unmutated_checkpoints_restore_the_original():
    for name, tree in TREES.items():
        make, learn = BASES[name]
        op = RiverOperator(make(), features=["x", "z"], target="y")
        out, foreign = watched(op.load_state_dict, {"model": tree, "features": ["x", "z"], "outputs": None})
        assert out is None and not foreign, (name, out, foreign)
        original = _trained(make(), learn)
        method = {"scaler|logreg": "predict_proba_one", "hst": "score_one", "pa": "predict_one"}.get(
            name, "transform_one")
        for x in ({"x": 0.3, "z": 1.0}, {"x": -2.0, "z": 4.0}):
            assert getattr(op.model, method)(x) == getattr(original, method)(x), (name, method)


def test_evaluate_refuses_metrics_of_another_configuration():
    from operators.river.evaluate import Evaluate

    saved = codec.loads(*codec.dumps(Evaluate(target="y", metrics=[{"metric": "FBeta", "params": {"beta": 2}}])
                                     .state_dict()))
    Evaluate(target="y", metrics=[{"metric": "FBeta", "params": {"beta": 2}}]).load_state_dict(saved)
    with pytest.raises(CheckpointError, match=r"Evaluate: .*metrics\[0\]\.beta is 2 in the checkpoint, 1 in"):
        Evaluate(target="y", metrics=[{"metric": "FBeta", "params": {"beta": 1}}]).load_state_dict(saved)


@pytest.mark.parametrize("fmt", [np.arange(3), [river_state.FORMAT], None, 2])
def test_a_format_that_is_not_a_string_is_refused(fmt):
    """Found by the fuzz: an array there compared element-wise and raised ValueError."""
    tree = encode(anomaly.HalfSpaceTrees(seed=1))
    tree["format"] = fmt
    with pytest.raises(CheckpointError, match="river state: format"):
        decode(tree)
