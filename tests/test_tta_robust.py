"""EATA and SAR: the operator contract, micro-batch cuts, resume, their sample selection,
EATA's Fisher regulariser, SAR's sharpness-aware step and recovery, options and entry
points."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tomllib
import torch
from test_tta_operators import images, run_cut, stream, tiny_model

from operators.tta import EATA, SAR, Source
from stream import Batch, state
from stream.batch import to_arrow
from stream.errors import ConfigError
from stream.options import check_options
from stream.testing import assert_same_outputs, check_operator

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CLEAN = images(48, seed=7)
# steps large enough to move a tiny model within a few dozen rows
FAST = {"EATA": {"lr": 0.5, "entropy_margin": 1.0}, "SAR": {"lr": 0.5, "entropy_margin": 1.0}}


def make(cls, model=None, **kw):
    model = model or tiny_model()
    return lambda: cls(model, device="cpu", **{**FAST[cls.__name__], **kw})


def shifted(n: int = 48) -> Batch:
    return Batch(pa.record_batch({"image": to_arrow(images(n) * 0.2 + 0.6)}))


def affine_distance(op) -> float:
    return float(sum(((p.detach() - a) ** 2).sum() for p, a in zip(op.trainable(), op._anchor)))


CASES = {"EATA": (EATA, {"fisher_data": CLEAN}), "ETA": (EATA, {}), "SAR": (SAR, {})}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bs", [1, 8])
def test_contract(case, bs):
    cls, kw = CASES[case]
    check_operator(make(cls, batch_size=bs, **kw), stream(24 if bs == 1 else 40), batch_size=bs)


@pytest.mark.parametrize("case", list(CASES))
def test_cut_resume_and_adaptation(case):
    """Outputs do not depend on the micro-batch cut; a checkpoint in the middle of a
    mini-batch resumes to the same outputs, optimiser state and method state included;
    the model does adapt (predictions differ from Source's after the first mini-batch)."""
    cls, kw = CASES[case]
    data = shifted(40)
    ref = run_cut(make(cls, batch_size=8, **kw)(), data, [40])
    assert_same_outputs(ref, run_cut(make(cls, batch_size=8, **kw)(), data, [3, 7]), "cuts", rtol=1e-5, atol=1e-6)
    first = make(cls, batch_size=8, **kw)()
    head = first(data.slice(0, 21))
    second = make(cls, batch_size=8, **kw)()
    second.load_state_dict(state.loads(*state.dumps(first.state_dict())))
    assert second.optimizer.state_dict()["state"], "optimizer state was not restored"
    assert_same_outputs(ref, Batch.concat([head, second(data.slice(21))]), "resume", rtol=1e-5, atol=1e-6)
    src = make(EATA, lr=0.0)()(data)
    assert np.array_equal(src.numpy("entropy")[:8], ref.numpy("entropy")[:8])
    assert not np.allclose(src.numpy("entropy")[8:], ref.numpy("entropy")[8:])


@pytest.mark.parametrize("cls", [EATA, SAR], ids=lambda c: c.__name__)
def test_only_reliable_samples_update(cls):
    """Samples whose entropy is above the margin never move the weights."""
    strict = make(cls, batch_size=8, entropy_margin=1e-6)()
    strict(shifted(32))
    assert affine_distance_of(strict) == 0.0
    loose = make(cls, batch_size=8)()
    loose(shifted(32))
    assert affine_distance_of(loose) > 0.0


def affine_distance_of(op) -> float:
    source = tiny_model()
    base = {k: v for k, v in source.state_dict().items() if k.endswith(("weight", "bias")) and "bn" in k}
    now = op.net.state_dict()
    return float(sum(((now[k] - v) ** 2).sum() for k, v in base.items()))


def test_eata_skips_redundant_samples():
    """With ε = 0 every sample is redundant once a moving average exists: only the first
    mini-batch's reliable samples are ever selected."""
    op = make(EATA, batch_size=8, redundancy_margin=0.0)()
    op(shifted(40))
    assert 0 < op.selected <= 8 and op.adapted == 5
    free = make(EATA, batch_size=8, redundancy_margin=1.0)()
    free(shifted(40))
    assert free.selected > op.selected


def test_eata_fisher_keeps_weights_near_the_source(tmp_path):
    """The Fisher term pulls the trained affine back towards the source values: with a
    large weight they move less than without clean samples (ETA); the samples may
    come from a .npy file, which must not need pickle."""
    eta = make(EATA, batch_size=8, redundancy_margin=1.0)()   # a near-uniform tiny model: select all
    eta(shifted(48))
    path = tmp_path / "clean.npy"
    np.save(path, CLEAN)
    eata = make(EATA, batch_size=8, fisher_data=str(path), fisher_alpha=1e3,
                redundancy_margin=1.0)()
    eata(shifted(48))
    assert eata.fisher_samples == 48 and eta.fisher_samples == 0
    assert all(bool((f >= 0).all()) for f in eata._fisher) and any(bool((f > 0).any()) for f in eata._fisher)
    assert affine_distance(eata) < 0.5 * affine_distance(eta)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="not a .npy array file"):
        EATA(tiny_model(), fisher_data=str(pickled))
    with pytest.raises(ConfigError, match="no such file"):
        EATA(tiny_model(), fisher_data=str(tmp_path / "missing.npy"))
    with pytest.raises(ConfigError, match=r"fisher_data.*3 channel"):
        EATA(tiny_model(), fisher_data=images(4, shape=(3, 8, 8)))
    with pytest.raises(ConfigError, match="NaN"):
        EATA(tiny_model(), fisher_data=np.full((4, 8, 8), np.nan, dtype=np.float32))


@pytest.mark.parametrize("loss_stats", ["batch", "running"])
def test_eata_fisher_from_more_clean_samples_than_one_mini_batch(loss_stats):
    """Clean samples beyond one mini-batch of 64 all count (the Fisher is the mean over
    mini-batches), whichever normalisation the loss uses."""
    model = tiny_model()
    clean = images(130, seed=3)
    one = EATA(model, device="cpu", fisher_data=clean[:64], loss_stats=loss_stats)
    three = EATA(model, device="cpu", fisher_data=clean, loss_stats=loss_stats)
    assert three.fisher_samples == 130
    assert any(not torch.allclose(a, b) for a, b in zip(one._fisher, three._fisher))


def test_sar_sharpness_aware_step_and_recovery():
    """ρ changes the step (the gradient is taken at the perturbed weights), and the
    weights are back at θ plus one SGD step afterwards (finite, no leftover
    perturbation). A recovery threshold above any entropy resets after every
    mini-batch; the recovery count survives a checkpoint."""
    flat = make(SAR, batch_size=8, rho=0.0)()
    sharp = make(SAR, batch_size=8, rho=0.5)()
    flat(shifted(16))
    sharp(shifted(16))
    assert not torch.allclose(flat.norms[0].weight, sharp.norms[0].weight)
    assert all(torch.isfinite(p).all() for p in sharp.trainable())
    always = make(SAR, batch_size=8, recovery_entropy=1.0)()
    always(shifted(24))
    assert always.recoveries == 3 and always.summary()["recoveries"] == 3
    torch.testing.assert_close(always.net.state_dict()["bn1.weight"], tiny_model().bn1.weight)
    restored = make(SAR, batch_size=8)()
    restored.load_state_dict(state.loads(*state.dumps(always.state_dict())))
    assert restored.recoveries == 3
    never = make(SAR, batch_size=8, recovery_entropy=None)()
    never(shifted(24))
    assert never.recoveries == 0


def test_batch_size_one_defaults_stay_diverse():
    """With the papers' defaults (lr 0.00025 at batch 64, scaled) neither method narrows
    the predicted classes at batch 1."""
    model = tiny_model()
    data = stream(200, seed=3)
    src = Source(model, device="cpu")(data).numpy("prediction")[-100:]
    for cls in (EATA, SAR):
        out = cls(model, batch_size=1, device="cpu")(data)
        assert np.isfinite(out.numpy("entropy")).all()
        assert len(np.unique(out.numpy("prediction")[-100:])) >= max(1, len(np.unique(src)) - 2)


def test_options_are_checked_and_entry_points_resolve():
    where = "p.toml [[operators]] #1 (eata)"
    with pytest.raises(ConfigError, match=r"\(eata\) key 'entropy_margin'"):
        check_options(EATA, {"entropy_margin": 0}, where)
    with pytest.raises(ConfigError, match=r"key 'fisher_data'.*string"):
        check_options(EATA, {"fisher_data": 3}, where)
    with pytest.raises(ConfigError, match=r"\(sar\) key 'rho'.*number"):
        check_options(SAR, {"rho": "wide"}, "p.toml [[operators]] #1 (sar)")
    assert check_options(SAR, {"recovery_entropy": 0.1, "lr": 1}, "x")["lr"] == 1.0
    points = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())
    ops = points["project"]["entry-points"]["hebbstream.operators"]
    for name, cls in (("eata", EATA), ("sar", SAR)):
        module, attr = ops[name].split(":")
        assert getattr(import_module(module), attr) is cls
    for bad in ({"redundancy_margin": 2.0}, {"lr": -1.0}):
        with pytest.raises(ConfigError):
            EATA(tiny_model(), **bad)
    with pytest.raises(ConfigError, match="loss_stats"):
        SAR(tiny_model(), loss_stats="train")
