"""The LR schedules of operators.continual.schedules: values at known steps against the
formulas of ../shared/docs/continual.md, torch stepping, state round-trip, bad phases."""

from __future__ import annotations

import math

import pytest
import torch

from operators.continual.schedules import (
    ConstantLR,
    InfiniteLR,
    RepeatedCosineLR,
    WarmupStableDecayLR,
    make_schedule,
    plot_schedules,
)
from stream.errors import ConfigError

ETA_MAX = 3e-4


def _opt(lr: float = ETA_MAX) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _walk(sched, steps: int, events=None) -> list[float]:
    """Rates actually set on the optimizer for steps 0..steps-1."""
    out = []
    for n in range(steps):
        if events and n in events:
            events[n](sched)
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return out


@pytest.mark.parametrize("cooldown", ["cosine", "inv_sqrt", "linear"])
def test_infinite_schedule_matches_the_formulas(cooldown):
    nw, nc, const, alpha = 10, 40, 0.25, 10.0
    s = InfiniteLR(
        _opt(),
        warmup_steps=nw,
        cooldown_steps=nc,
        const_ratio=const,
        min_ratio=0.01,
        cooldown=cooldown,
    )
    e_const = const * ETA_MAX

    def expected(n: int) -> float:
        if n < nw:
            return ETA_MAX * n / nw
        if n < nw + nc:
            p = (n - nw) / nc
            if cooldown == "cosine":
                return e_const + (ETA_MAX - e_const) * (1 + math.cos(math.pi * p)) / 2
            if cooldown == "inv_sqrt":
                g = lambda q: 1 / math.sqrt(1 + alpha * q) - 1  # noqa: E731
                return ETA_MAX + (e_const - ETA_MAX) * g(p) / g(1)
            return ETA_MAX + (e_const - ETA_MAX) * p
        return e_const

    lrs = _walk(s, 200)
    for n in (0, 1, 5, 9, 10, 11, 25, 30, 49, 50, 51, 199):
        assert lrs[n] == pytest.approx(expected(n), rel=1e-12, abs=1e-15), n
        assert s.lr_at(n) == pytest.approx(expected(n), rel=1e-12, abs=1e-15)
    # hand-checked points: end of warmup is η_max, mid-cosine is halfway, then constant
    assert lrs[10] == pytest.approx(ETA_MAX)
    assert lrs[50] == lrs[199] == pytest.approx(e_const)
    if cooldown == "cosine":
        assert lrs[30] == pytest.approx((ETA_MAX + e_const) / 2)


def test_annealing_is_exponential_to_eta_min_then_holds_or_resumes():
    na, const, mn = 20, 0.25, 0.01
    s = InfiniteLR(_opt(), warmup_steps=5, cooldown_steps=5, const_ratio=const, min_ratio=mn)
    lrs = _walk(s, 100, {60: lambda sc: sc.anneal(na)})
    lam = math.log(const / mn) / na
    for m in (0, 1, 7, 19):
        assert lrs[60 + m] == pytest.approx(const * ETA_MAX * math.exp(-lam * m), rel=1e-12)
    assert s.lr_at(60 + na) == pytest.approx(mn * ETA_MAX)
    assert lrs[80] == lrs[99] == pytest.approx(mn * ETA_MAX)  # "hold"
    assert lrs[59] == pytest.approx(const * ETA_MAX)
    assert s.anneal_done and not s.annealing

    r = InfiniteLR(_opt(), warmup_steps=5, cooldown_steps=5, const_ratio=const, min_ratio=mn)
    lrs = _walk(
        r,
        100,
        {
            30: lambda sc: sc.anneal(10, then="constant"),
            70: lambda sc: sc.anneal(10, then="constant"),
        },
    )
    assert lrs[39] < lrs[30] and lrs[40] == pytest.approx(const * ETA_MAX)  # no re-warm above η_const
    assert lrs[79] < lrs[70] and lrs[99] == pytest.approx(const * ETA_MAX)
    assert max(lrs[15:]) == pytest.approx(const * ETA_MAX)


def test_anneal_during_cooldown_starts_from_the_current_rate():
    s = InfiniteLR(_opt(), warmup_steps=10, cooldown_steps=100, const_ratio=0.5, min_ratio=0.05)
    lrs = _walk(s, 80, {40: lambda sc: sc.anneal(20)})
    assert lrs[40] == pytest.approx(s.base_factor(40) * ETA_MAX)
    assert s.lr_at(60) == pytest.approx(0.05 * ETA_MAX)
    with pytest.raises(ConfigError, match="already annealing"):
        t = InfiniteLR(_opt(), min_ratio=0.01)
        t.anneal(10)
        t.anneal(10)


def test_repeated_cosine_rewarms_every_cycle():
    s = RepeatedCosineLR(_opt(), cycle_steps=50, warmup_steps=5, min_ratio=0.1)
    lrs = _walk(s, 150)
    for c in range(3):
        assert lrs[50 * c] == 0.0
        assert lrs[50 * c + 5] == pytest.approx(ETA_MAX)
        p = (30 - 5) / 45
        assert lrs[50 * c + 30] == pytest.approx(ETA_MAX * (0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2))
    assert lrs[49] == pytest.approx(ETA_MAX * (0.1 + 0.9 * (1 + math.cos(math.pi * 44 / 45)) / 2))


def test_wsd_and_constant_values():
    s = WarmupStableDecayLR(_opt(), total_steps=100, warmup_steps=10, decay_steps=20, decay="exp", min_ratio=0.01)
    lrs = _walk(s, 120)
    assert lrs[5] == pytest.approx(ETA_MAX / 2) and lrs[50] == pytest.approx(ETA_MAX)
    assert lrs[90] == pytest.approx(ETA_MAX * 0.01**0.5)
    assert lrs[110] == pytest.approx(ETA_MAX * 0.01)
    c = _walk(ConstantLR(_opt(), warmup_steps=4), 10)
    assert c[2] == pytest.approx(ETA_MAX / 2) and c[9] == pytest.approx(ETA_MAX)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("infinite", dict(warmup_steps=7, cooldown_steps=13, cooldown="inv_sqrt")),
        ("repeated_cosine", dict(cycle_steps=[20, 30, 25], warmup_steps=3)),
        ("wsd", dict(total_steps=60, warmup_steps=5, decay_steps=10)),
    ],
)
def test_state_round_trip_resumes_exactly(name, kwargs):
    a = make_schedule(name, _opt(), **kwargs)
    if name == "infinite":
        events = {25: lambda sc: sc.anneal(9, then="constant")}
    else:
        events = None
    full = _walk(a, 70, events)

    b = make_schedule(name, _opt(), **kwargs)
    head = _walk(b, 30, events)
    state = b.state_dict()
    opt = _opt()
    c = make_schedule(name, opt, **kwargs)
    c.load_state_dict(state)
    opt.param_groups[0]["lr"] = c.get_last_lr()[0]
    tail = _walk(c, 40)
    assert head + tail == full


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (
            WarmupStableDecayLR,
            dict(total_steps=100, warmup_steps=60, decay_steps=50),
            "exceed total_steps",
        ),
        (RepeatedCosineLR, dict(cycle_steps=[50, 5], warmup_steps=10), "cycle 1 has 5 steps"),
        (RepeatedCosineLR, dict(cycle_steps=[]), "empty"),
        (InfiniteLR, dict(warmup_steps=-1), "warmup_steps"),
        (InfiniteLR, dict(cooldown_steps=2.5), "cooldown_steps"),
        (InfiniteLR, dict(const_ratio=0.1, min_ratio=0.2), "min_ratio"),
        (InfiniteLR, dict(const_ratio=1.5), "const_ratio"),
        (InfiniteLR, dict(anneal_steps=0), "anneal_steps"),
        (InfiniteLR, dict(cooldown="step"), "unknown cooldown"),
    ],
)
def test_inconsistent_phases_are_refused_at_construction(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(_opt(), **kwargs)


def test_make_schedule_names_bad_arguments():
    with pytest.raises(ConfigError, match="unknown schedule"):
        make_schedule("cosine", _opt())
    with pytest.raises(ConfigError, match="bad arguments"):
        make_schedule("constant", _opt(), cycle_steps=3)


def test_plot_schedules_writes_a_png(tmp_path):
    path = plot_schedules(str(tmp_path / "s.png"), steps=300)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
