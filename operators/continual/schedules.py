"""Learning-rate schedules for continual pre-training, as ``torch.optim`` LR schedulers.

:class:`InfiniteLR` is the infinite schedule of Singh, Janson et al. (CoLLAs 2025) and
Ibrahim et al. (TMLR 2024): warm up once, cool down to a constant rate, stay there for as
long as the stream runs, and anneal exponentially on demand. :class:`RepeatedCosineLR`
(re-warm and cosine-decay for every chunk of data) and :class:`WarmupStableDecayLR`
(MiniCPM's WSD) are the baselines. :func:`plot_schedules` draws them (``docs/schedules.png``).

Every scheduler scales each parameter group's initial ``lr`` (= η_max) by a factor that
is a closed-form function of the step ``n`` (``last_epoch``), so ``state_dict()`` /
``load_state_dict()`` resume exactly. As with every torch scheduler, the rate used by the
``n``-th ``optimizer.step()`` (counting from 0) is the one at step ``n``; the warmup
formula η = η_max · n / N_w therefore gives 0 at step 0.

The formulas, with p the progress through a phase (0 → 1):

- warmup: η = η_max · n / N_w
- cooldown ``"cosine"``: η = η_const + (η_max − η_const) · (1 + cos πp) / 2
- cooldown ``"inv_sqrt"``: η = η_max + (η_const − η_max) · g(p)/g(1), g(p) = 1/√(1 + αp) − 1
- cooldown ``"linear"``: η = η_max + (η_const − η_max) · p
- constant: η = η_const
- annealing from step s: η = η_s · exp(−λ·m), m = n − s, λ = ln(η_s/η_min)/N_a, where
  η_s is the rate at s (η_const once cooled down); after N_a steps η_min is held, or
  the constant rate resumes (``then="constant"``).

Example:
    >>> import torch
    >>> from operators.continual.schedules import InfiniteLR
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = InfiniteLR(opt, warmup_steps=10, cooldown_steps=20, const_ratio=0.25,
    ...                    min_ratio=0.01)
    >>> [round(sched.lr_at(n), 4) for n in (0, 5, 10, 20, 30, 1000)]
    [0.0, 0.5, 1.0, 0.625, 0.25, 0.25]
    >>> for _ in range(40):
    ...     opt.step(); sched.step()
    >>> sched.anneal(10)              # from the current step 40 down to η_min in 10 steps
    >>> [round(sched.lr_at(n), 4) for n in (40, 45, 50, 60)]
    [0.25, 0.05, 0.01, 0.01]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from stream.errors import ConfigError

COOLDOWNS = ("cosine", "inv_sqrt", "linear")
ANNEAL_THEN = ("hold", "constant")


def _check_steps(owner: str, **steps: int) -> None:
    for name, value in steps.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{owner}: {name} must be a whole number of steps ≥ 0, got {value!r}")


def _check_ratio(owner: str, name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not (isinstance(value, (int, float)) and low < value <= high):
        raise ConfigError(f"{owner}: {name} must be in ({low}, {high}], got {value!r}")


def cooldown_factor(kind: str, p: float, const_ratio: float, alpha: float = 10.0) -> float:
    """Factor of η_max at progress ``p`` ∈ [0, 1] of a cooldown from 1 to ``const_ratio``.

    >>> [round(cooldown_factor(k, 0.5, 0.25), 4) for k in COOLDOWNS]
    [0.625, 0.3646, 0.625]
    """
    p = min(max(p, 0.0), 1.0)
    if kind == "cosine":
        return const_ratio + (1.0 - const_ratio) * (1.0 + math.cos(math.pi * p)) / 2.0
    if kind == "inv_sqrt":
        g = lambda q: 1.0 / math.sqrt(1.0 + alpha * q) - 1.0  # noqa: E731
        return 1.0 + (const_ratio - 1.0) * g(p) / g(1.0)
    if kind == "linear":
        return 1.0 + (const_ratio - 1.0) * p
    raise ConfigError(f"unknown cooldown {kind!r}; choose one of {COOLDOWNS}")


class _FactorLR(LRScheduler):
    """A scheduler whose rate is ``initial_lr * factor(step)``, closed form in the step."""

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def lr_at(self, step: int, group: int = 0) -> float:
        """The learning rate of parameter group ``group`` at step ``step``."""
        return float(self.base_lrs[group]) * self.factor(step)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [float(base) * f for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class InfiniteLR(_FactorLR):
    """Warmup once, cooldown to a constant rate, constant forever, anneal on demand.

    Args:
        optimizer: any torch optimizer; each group's ``lr`` is its η_max.
        warmup_steps: N_w, linear warmup from 0 (once, at the very start).
        cooldown_steps: N_c, from η_max down to η_const.
        const_ratio: η_const / η_max (the papers swept 0.25–0.75).
        min_ratio: η_min / η_max, the end of every annealing phase (≤ ``const_ratio``).
        cooldown: ``"cosine"``, ``"inv_sqrt"`` or ``"linear"``.
        alpha: α of the inverse-square-root cooldown.
        anneal_steps: N_a used by :meth:`anneal` when no length is given.
        last_epoch: as in every torch scheduler.

    :meth:`anneal` starts an exponential decay at the current step; new data or tasks
    never re-warm.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        cooldown_steps: int = 0,
        const_ratio: float = 0.25,
        min_ratio: float = 0.01,
        cooldown: str = "cosine",
        alpha: float = 10.0,
        anneal_steps: int = 100,
        last_epoch: int = -1,
    ):
        owner = type(self).__name__
        _check_steps(owner, warmup_steps=warmup_steps, cooldown_steps=cooldown_steps)
        _check_steps(owner, anneal_steps=anneal_steps)
        if anneal_steps == 0:
            raise ConfigError(f"{owner}: anneal_steps must be ≥ 1")
        _check_ratio(owner, "const_ratio", const_ratio)
        _check_ratio(owner, "min_ratio", min_ratio, high=const_ratio)
        if cooldown not in COOLDOWNS:
            raise ConfigError(f"{owner}: unknown cooldown {cooldown!r}; choose one of {COOLDOWNS}")
        if not (isinstance(alpha, (int, float)) and alpha > 0):
            raise ConfigError(f"{owner}: alpha must be > 0, got {alpha!r}")
        self.warmup_steps, self.cooldown_steps = warmup_steps, cooldown_steps
        self.const_ratio, self.min_ratio = float(const_ratio), float(min_ratio)
        self.cooldown, self.alpha = cooldown, float(alpha)
        self.anneal_steps = anneal_steps
        # the annealing phase in progress (or finished and held): start step, length,
        # factor at the start, what follows it
        self.anneal_start: int | None = None
        self.anneal_length = 0
        self.anneal_from = 0.0
        self.anneal_then = "hold"
        super().__init__(optimizer, last_epoch)

    def base_factor(self, step: int) -> float:
        """The factor without annealing: warmup, cooldown, then constant."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if step < self.warmup_steps + self.cooldown_steps:
            p = (step - self.warmup_steps) / self.cooldown_steps
            return cooldown_factor(self.cooldown, p, self.const_ratio, self.alpha)
        return self.const_ratio

    def factor(self, step: int) -> float:
        if self.anneal_start is None or step < self.anneal_start:
            return self.base_factor(step)
        m = step - self.anneal_start
        if m >= self.anneal_length:
            if self.anneal_then == "constant":
                return self.base_factor(step)
            m = self.anneal_length
        start = self.anneal_from
        if start <= self.min_ratio:  # already below η_min (early warmup): hold the rate
            return start
        lam = math.log(start / self.min_ratio) / self.anneal_length
        return start * math.exp(-lam * m)

    def anneal(self, steps: int | None = None, then: str = "hold") -> None:
        """Start annealing now: exponential decay to η_min over ``steps`` (N_a) steps.

        ``then="hold"`` keeps η_min afterwards (an annealed branch or the end of
        training); ``then="constant"`` returns to η_const, as when the main run is
        annealed at the end of a task and continues on the next one.
        """
        steps = self.anneal_steps if steps is None else steps
        _check_steps(type(self).__name__, steps=steps)
        if steps == 0:
            raise ConfigError(f"{type(self).__name__}: an annealing phase needs ≥ 1 step")
        if then not in ANNEAL_THEN:
            raise ConfigError(f"{type(self).__name__}: then must be one of {ANNEAL_THEN}, got {then!r}")
        if self.annealing:
            raise ConfigError(
                f"{type(self).__name__}: already annealing since step "
                f"{self.anneal_start} (until step {self.anneal_start + self.anneal_length})"
            )
        from_factor = self.factor(self.last_epoch)
        self.anneal_start, self.anneal_length = self.last_epoch, steps
        self.anneal_from, self.anneal_then = from_factor, then

    @property
    def annealing(self) -> bool:
        """True while an annealing phase is under way (not yet at its last step)."""
        return self.anneal_start is not None and self.last_epoch < self.anneal_start + self.anneal_length

    @property
    def anneal_done(self) -> bool:
        """True once the annealing phase started by :meth:`anneal` has run all its steps."""
        return self.anneal_start is not None and not self.annealing


class RepeatedCosineLR(_FactorLR):
    """Re-warm and cosine-decay for every chunk of data (the repeated-cosine baseline).

    Args:
        cycle_steps: length of each cycle; one number repeats forever, a list gives
            each cycle its own length (one per task) and ``min_ratio`` holds after it.
        warmup_steps: linear re-warmup at the start of every cycle.
        min_ratio: η_min / η_max at the end of every cycle.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = RepeatedCosineLR(opt, cycle_steps=[10, 20], warmup_steps=2, min_ratio=0.1)
    >>> [round(s.lr_at(n), 3) for n in (0, 1, 2, 6, 10, 11, 12, 21, 30, 99)]
    [0.0, 0.5, 1.0, 0.55, 0.0, 0.5, 1.0, 0.55, 0.1, 0.1]
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cycle_steps: int | Sequence[int],
        warmup_steps: int = 0,
        min_ratio: float = 0.01,
        last_epoch: int = -1,
    ):
        owner = type(self).__name__
        cycles = [cycle_steps] if isinstance(cycle_steps, int) else list(cycle_steps)
        if not cycles:
            raise ConfigError(f"{owner}: cycle_steps is empty")
        _check_steps(owner, warmup_steps=warmup_steps)
        for i, c in enumerate(cycles):
            _check_steps(owner, **{f"cycle_steps[{i}]": c})
            if c <= warmup_steps:
                raise ConfigError(f"{owner}: cycle {i} has {c} steps, not more than its warmup_steps={warmup_steps}")
        _check_ratio(owner, "min_ratio", min_ratio)
        self.cycles, self.repeat = cycles, isinstance(cycle_steps, int)
        self.warmup_steps, self.min_ratio = warmup_steps, float(min_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        if self.repeat:
            pos, length = step % self.cycles[0], self.cycles[0]
        else:
            pos = step
            for length in self.cycles:
                if pos < length:
                    break
                pos -= length
            else:
                return self.min_ratio
        if pos < self.warmup_steps:
            return pos / self.warmup_steps
        p = (pos - self.warmup_steps) / (length - self.warmup_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * p)) / 2.0


class WarmupStableDecayLR(_FactorLR):
    """MiniCPM's warmup-stable-decay: warmup, constant η_max, decay over the last steps.

    Args:
        total_steps: length of the whole run (WSD needs it in advance).
        warmup_steps, decay_steps: the first and last phases; their sum must fit.
        decay: ``"exp"`` (η_max → η_min exponentially), ``"linear"`` or ``"cosine"``.
        min_ratio: η_min / η_max, held after ``total_steps``.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = WarmupStableDecayLR(opt, total_steps=100, warmup_steps=10, decay_steps=20,
    ...                         decay="linear", min_ratio=0.1)
    >>> [round(s.lr_at(n), 3) for n in (5, 10, 80, 90, 100, 200)]
    [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    DECAYS = ("exp", "linear", "cosine")

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        decay_steps: int = 0,
        decay: str = "exp",
        min_ratio: float = 0.01,
        last_epoch: int = -1,
    ):
        owner = type(self).__name__
        _check_steps(owner, total_steps=total_steps, warmup_steps=warmup_steps, decay_steps=decay_steps)
        if warmup_steps + decay_steps > total_steps:
            raise ConfigError(
                f"{owner}: warmup_steps ({warmup_steps}) + decay_steps "
                f"({decay_steps}) exceed total_steps ({total_steps})"
            )
        if decay not in self.DECAYS:
            raise ConfigError(f"{owner}: unknown decay {decay!r}; choose one of {self.DECAYS}")
        _check_ratio(owner, "min_ratio", min_ratio)
        self.total_steps, self.warmup_steps, self.decay_steps = (
            total_steps,
            warmup_steps,
            decay_steps,
        )
        self.decay, self.min_ratio = decay, float(min_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        start = self.total_steps - self.decay_steps
        if step < start:
            return 1.0
        if step >= self.total_steps:
            return self.min_ratio
        p = (step - start) / self.decay_steps
        if self.decay == "exp":
            return math.exp(math.log(self.min_ratio) * p)
        if self.decay == "linear":
            return 1.0 + (self.min_ratio - 1.0) * p
        return self.min_ratio + (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * p)) / 2.0


class ConstantLR(_FactorLR):
    """Optional linear warmup, then η_max for ever (the constant-rate baseline).

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    >>> [ConstantLR(opt, warmup_steps=4).lr_at(n) for n in (1, 4, 10**6)]
    [0.5, 2.0, 2.0]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, last_epoch: int = -1):
        _check_steps(type(self).__name__, warmup_steps=warmup_steps)
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        return step / self.warmup_steps if step < self.warmup_steps else 1.0


SCHEDULES: dict[str, type[_FactorLR]] = {
    "infinite": InfiniteLR,
    "repeated_cosine": RepeatedCosineLR,
    "wsd": WarmupStableDecayLR,
    "constant": ConstantLR,
}


def make_schedule(name: str, optimizer: torch.optim.Optimizer, **kwargs: Any) -> _FactorLR:
    """Build the schedule called ``name`` (see :data:`SCHEDULES`) with its arguments.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> type(make_schedule("wsd", opt, total_steps=10)).__name__
    'WarmupStableDecayLR'
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[name](optimizer, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"schedule {name!r}: bad arguments {sorted(kwargs)}: {exc}") from exc


def _curve(sched: _FactorLR, steps: int, events: dict[int, Any] | None = None) -> list[float]:
    out = []
    for n in range(steps):
        if events and n in events:
            events[n](sched)
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def plot_schedules(path: str, steps: int = 3000, tasks: int = 3) -> str:
    """Draw the schedules over ``tasks`` equal tasks into the PNG ``path``; returns it.

    The infinite schedule anneals the main run over the last 20% of every task and
    resumes η_const on the next one; a dashed line shows an annealed branch taken
    mid-task while the main run stays constant.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def opt() -> torch.optim.Optimizer:
        return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)

    task = steps // tasks
    warm, cool, anneal = task // 20, task // 5, task // 5
    inf_kw = dict(warmup_steps=warm, cooldown_steps=cool, const_ratio=0.25, min_ratio=0.01)
    ends = {t * task - anneal: (lambda s: s.anneal(anneal, then="constant")) for t in range(1, tasks + 1)}
    curves = {
        "infinite (cosine cooldown, anneal at task end)": _curve(InfiniteLR(opt(), **inf_kw), steps, ends),
        "infinite (inverse-sqrt cooldown, never annealed)": _curve(
            InfiniteLR(opt(), cooldown="inv_sqrt", **inf_kw), steps
        ),
        "repeated cosine (re-warm per task)": _curve(
            RepeatedCosineLR(opt(), cycle_steps=task, warmup_steps=warm, min_ratio=0.01), steps
        ),
        "warmup-stable-decay": _curve(
            WarmupStableDecayLR(opt(), total_steps=steps, warmup_steps=warm, decay_steps=steps // 10),
            steps,
        ),
        "constant": _curve(ConstantLR(opt(), warmup_steps=warm), steps),
    }
    branch_at = task + task // 2
    branch = InfiniteLR(opt(), **inf_kw)
    branch.last_epoch = branch_at
    branch.anneal(anneal)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, ys in curves.items():
        ax.plot(range(steps), ys, label=label, lw=1.6)
    xs = list(range(branch_at, branch_at + anneal + 1))
    ax.plot(
        xs,
        [branch.lr_at(n) for n in xs],
        "k--",
        lw=1.4,
        label="annealed branch (copy of the main run)",
    )
    for t in range(1, tasks):
        ax.axvline(t * task, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("step (dotted lines: new task / domain)")
    ax.set_ylabel("learning rate / η_max")
    ax.set_title("Learning-rate schedules for continual pre-training")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
