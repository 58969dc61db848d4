"""Continual pre-training over three real text domains: infinite vs repeated cosine vs constant.

A byte-level GRU language model (:class:`operators.continual.ContinualPretrainer`) is
pre-trained on three domains found on any machine with Python, one after the other:

1. English documentation: the help texts in the standard library's ``pydoc_data/topics.py``;
2. Python source: the standard library's top-level ``*.py`` files;
3. C headers: Python's own include folder (``sysconfig``'s ``include``), else /usr/include.

Each domain's last 10 % of bytes is held out. Every schedule takes the same number of
steps on the same micro-batches (same seed → same data order), with the same η_max
(1e-2: the best constant rate for this model on the first domain alone, probed over
3e-3 / 1e-2 / 3e-2 before the comparison):

- ``infinite``: warmup once, cosine cooldown to η_const = 0.5·η_max (``--const-ratio``;
  the papers swept 0.25–0.75), constant; the main run is annealed (exponentially to
  η_min = 0.01·η_max) over the last 20 % of every domain, then returns to η_const (never
  re-warmed). At 40 % of every domain an annealed *branch* is taken (a copy annealed over
  20 % of a domain while the main run stays constant) to check the annealed-checkpoint
  claim; it costs compute, not data.
- ``repeated_cosine``: re-warm to η_max at every domain, cosine decay to η_min.
- ``constant``: warmup, then η_max for ever.

Figures: held-out loss (nats/byte) per domain after each phase, ``final_avg_loss`` (mean
over domains at the end), ``forgetting`` (mean over earlier domains of the loss increase
from the end of their own phase to the end), over ≥ 3 seeds; the annealed branch's loss
on the current domain against the constant-rate main run at the same step and at the
branch point; training tokens/s on CPU. A plot goes to ``benchmarks/results/continual.png``.

Run: ``python benchmarks/continual.py`` (≈ 10 min on 2 cores) or ``--quick`` (< 1 min).
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
import time

import numpy as np
import pyarrow as pa
import torch
from common import RESULTS, finish, parse_args

from operators.continual import ContinualPretrainer
from stream import Batch

SCHEDULES = ("infinite", "repeated_cosine", "constant")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAIN_BYTES = 1_000_000  # at most this many bytes of each domain are read


def _read(paths: list[str], limit: int) -> bytes:
    out = bytearray()
    for p in paths:
        with open(p, "rb") as f:
            out += f.read()
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def load_domains(limit: int = DOMAIN_BYTES) -> dict[str, bytes]:
    """The three text domains, as bytes, read from the Python installation."""
    from pydoc_data.topics import topics

    english = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")[:limit]
    stdlib = sysconfig.get_paths()["stdlib"]
    python = _read(sorted(glob.glob(os.path.join(stdlib, "*.py"))), limit)
    headers = sorted(glob.glob(os.path.join(sysconfig.get_paths()["include"], "**", "*.h"), recursive=True))
    if not headers:
        headers = sorted(glob.glob("/usr/include/*.h"))
    if not headers:
        raise SystemExit(
            "benchmarks/continual.py: no C headers found (Python's include folder or /usr/include); install python3-dev"
        )
    c = _read(headers, limit)
    for name, data in (("english", english), ("python", python), ("c_headers", c)):
        if len(data) < 50_000:
            raise SystemExit(f"benchmarks/continual.py: domain {name} has only {len(data)} bytes")
    return {"english": english, "python": python, "c_headers": c}


class Domain:
    """A domain's training bytes (first 90 %) and fixed held-out chunks (last 10 %)."""

    def __init__(self, name: str, data: bytes, context: int, n_eval: int):
        cut = int(len(data) * 0.9)
        self.name = name
        self.train = np.frombuffer(data[:cut], dtype=np.uint8)
        held = data[cut:]
        starts = np.linspace(0, len(held) - context, n_eval).astype(int)
        self.held_out = [held[s : s + context] for s in starts]
        self.context = context

    def micro_batch(self, rng: np.random.Generator, size: int) -> Batch:
        starts = rng.integers(0, len(self.train) - self.context, size)
        rows = [self.train[s : s + self.context].tobytes() for s in starts]
        return Batch(pa.record_batch({"text": pa.array(rows, pa.binary())}), source=self.name)


def run_schedule(schedule: str, domains: list[Domain], seed: int, cfg: dict) -> dict:
    """Train over the domains in order; held-out losses after each phase, curves, branches."""
    s, bs = cfg["steps"], cfg["batch_size"]
    warm = max(1, s // 20)
    common = dict(
        model="gru",
        dim=cfg["dim"],
        layers=2,
        max_tokens=cfg["context"],
        batch_size=bs,
        lr=cfg["lr"],
        warmup_steps=warm,
        min_ratio=0.01,
        seed=seed,
        device=cfg["device"],
    )
    if schedule == "infinite":
        op = ContinualPretrainer(
            "text",
            schedule="infinite",
            cooldown_steps=s // 4,
            const_ratio=cfg["const_ratio"],
            anneal_steps=s // 5,
            **common,
        )
    elif schedule == "repeated_cosine":
        op = ContinualPretrainer("text", schedule="repeated_cosine", schedule_args={"cycle_steps": s}, **common)
    else:
        op = ContinualPretrainer("text", schedule="constant", **common)
    data_rng = np.random.default_rng(1000 + seed)  # same micro-batches for every schedule

    def held_out(model=None) -> list[float]:
        return [op.evaluate(d.held_out, model) for d in domains]

    after_phase, curve, lrs, branches = [], [], [], []
    every = max(1, s // cfg["curve_points"])
    pending_branch = None
    for dom in domains:
        for k in range(s):
            if schedule == "infinite" and k == int(0.4 * s):
                op.request_annealed_checkpoint()
                pending_branch = {
                    "domain": dom.name,
                    "seed": seed,
                    "branched_at": op.steps,
                    "main_at_branch_point": op.evaluate(dom.held_out),
                }
            if schedule == "infinite" and k == s - s // 5:
                op.anneal_main(s // 5)
            lrs.append(op.main.lr)
            op(dom.micro_batch(data_rng, bs))
            if (
                pending_branch
                and op.annealed
                and op.annealed["kind"] == "branch"
                and op.annealed["branched_at"] == pending_branch["branched_at"]
            ):
                pending_branch["annealed_branch"] = op.evaluate(dom.held_out, op.annealed_model())
                pending_branch["main_same_step"] = op.evaluate(dom.held_out)
                pending_branch["step"] = op.steps
                branches.append(pending_branch)
                pending_branch = None
            if op.steps % every == 0:
                curve.append([op.steps, *held_out()])
        after_phase.append(held_out())
    summary = op.summary()
    return {
        "after_phase": after_phase,
        "curve": curve,
        "lrs": lrs,
        "branches": branches,
        "tokens": summary["tokens"],
        "train_seconds": summary["train_seconds"],
    }


def forgetting(after_phase: list[list[float]]) -> float:
    """Mean over earlier domains of (loss at the end) − (loss right after their own phase)."""
    last = len(after_phase) - 1
    return float(np.mean([after_phase[last][d] - after_phase[d][d] for d in range(last)]))


def summarize(rs: list[dict], names: list[str]) -> dict:
    """Mean and spread over seeds of one schedule's held-out losses."""
    final = [float(np.mean(r["after_phase"][-1])) for r in rs]
    forg = [forgetting(r["after_phase"]) for r in rs]
    return {
        "final_avg_loss": float(np.mean(final)),
        "final_avg_loss_std": float(np.std(final)),
        "forgetting": float(np.mean(forg)),
        "forgetting_std": float(np.std(forg)),
        "final_loss_per_domain": dict(
            zip(names, np.mean([r["after_phase"][-1] for r in rs], 0).round(4).tolist(), strict=True)
        ),
        "loss_after_each_phase": np.mean([r["after_phase"] for r in rs], 0).round(4).tolist(),
        "per_seed": {"final_avg_loss": final, "forgetting": forg},
    }


def targets(results: dict[str, dict]) -> dict:
    """The issue's targets: infinite ≤ repeated cosine on final average loss, less forgetting."""
    if "infinite" not in results or "repeated_cosine" not in results:
        return {}
    inf, cos = results["infinite"], results["repeated_cosine"]
    pairs = zip(inf["per_seed"]["final_avg_loss"], cos["per_seed"]["final_avg_loss"], strict=True)
    forg = zip(inf["per_seed"]["forgetting"], cos["per_seed"]["forgetting"], strict=True)
    return {
        "target_final_avg_loss_infinite_le_repeated_cosine": inf["final_avg_loss"] <= cos["final_avg_loss"],
        "target_less_forgetting_than_repeated_cosine": inf["forgetting"] < cos["forgetting"],
        "seeds_infinite_le_cosine_final_avg_loss": int(sum(a <= b for a, b in pairs)),
        "seeds_infinite_less_forgetting": int(sum(a < b for a, b in forg)),
    }


def annealed_summary(branches: list[dict]) -> dict:
    """Annealed branch vs the constant-rate main run, on the current domain's held-out loss."""
    if not branches:
        return {}
    mean = lambda key: float(np.mean([b[key] for b in branches]))  # noqa: E731
    return {
        "comparisons": len(branches),
        "branch_below_main_at_branch_point": int(
            sum(b["annealed_branch"] < b["main_at_branch_point"] for b in branches)
        ),
        "branch_below_main_same_step": int(sum(b["annealed_branch"] < b["main_same_step"] for b in branches)),
        "mean_loss_branch": mean("annealed_branch"),
        "mean_loss_main_at_branch_point": mean("main_at_branch_point"),
        "mean_loss_main_same_step": mean("main_same_step"),
        "rows": branches,
    }


def plot(path: str, names: list[str], runs: dict[str, list[dict]], steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"infinite": "tab:blue", "repeated_cosine": "tab:orange", "constant": "tab:green"}
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.8))
    for sched, seeds in runs.items():
        lr = np.asarray(seeds[0]["lrs"])
        axes[0].plot(np.arange(len(lr)), lr / lr.max(), color=colors[sched], label=sched)
        curves = np.mean([np.asarray(r["curve"]) for r in seeds], axis=0)
        for d in range(len(names)):
            axes[d + 1].plot(curves[:, 0], curves[:, d + 1], color=colors[sched], label=sched)
    axes[0].set_title("learning rate / η_max (seed 0)")
    for d, name in enumerate(names):
        axes[d + 1].set_title(f"held-out loss: {name}")
        axes[d + 1].set_ylabel("nats / byte")
    for ax in axes:
        for t in range(1, len(names)):
            ax.axvline(t * steps, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("step (domains: " + " → ".join(names) + ")")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    def extra(p):
        p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick 1)")
        p.add_argument("--steps", type=int, default=None, help="micro-batches per domain")
        p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
        p.add_argument("--device", default="cpu")
        p.add_argument("--const-ratio", type=float, default=0.5, help="η_const / η_max (infinite)")
        p.add_argument("--lr", type=float, default=1e-2, help="η_max of every schedule")
        p.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated subset")

    args = parse_args("continual", __doc__.splitlines()[0], extra)
    torch.set_num_threads(args.threads)
    cfg = {
        "steps": args.steps or (60 if args.quick else 600),
        "batch_size": 16,
        "context": 48 if args.quick else 64,
        "dim": 64,
        "lr": args.lr,
        "const_ratio": args.const_ratio,
        "curve_points": 6 if args.quick else 12,
        "device": args.device,
    }
    n_seeds = args.seeds or (1 if args.quick else 3)
    seeds = [args.seed + i for i in range(n_seeds)]
    t0 = time.perf_counter()
    raw = load_domains()
    domains = [Domain(n, d, cfg["context"], 48 if args.quick else 128) for n, d in raw.items()]
    names = [d.name for d in domains]
    schedules = [s for s in args.schedules.split(",") if s]
    unknown = set(schedules) - set(SCHEDULES)
    if unknown:
        raise SystemExit(f"benchmarks/continual.py: unknown schedules {sorted(unknown)}; known {SCHEDULES}")
    runs: dict[str, list[dict]] = {s: [] for s in schedules}
    for seed in seeds:
        for sched in schedules:
            r = run_schedule(sched, domains, seed, cfg)
            runs[sched].append(r)
            print(
                f"seed {seed} {sched:16s} after each phase "
                + " | ".join(" ".join(f"{x:.3f}" for x in row) for row in r["after_phase"]),
                file=sys.stderr,
                flush=True,
            )

    results = {sched: summarize(rs, names) for sched, rs in runs.items()}
    # tokens/s of plain runs (the infinite runs also train annealed branches)
    plain = [r for s, rs in runs.items() if s != "infinite" for r in rs] or runs[schedules[0]]
    tokens_per_s = sum(r["tokens"] for r in plain) / sum(r["train_seconds"] for r in plain)
    os.makedirs(RESULTS, exist_ok=True)
    png = os.path.join(RESULTS, f"continual{'-quick' if args.quick else ''}.png")
    plot(png, names, runs, cfg["steps"])
    speed_key = "tokens_per_s_cpu" if args.device == "cpu" else f"tokens_per_s_{args.device}"
    figures = {
        "domains": {d.name: {"train_bytes": int(len(d.train)), "held_out_chunks": len(d.held_out)} for d in domains},
        "config": {**cfg, "seeds": seeds, "model": "byte GRU, 2 layers", "threads": args.threads},
        "final_avg_loss": {s: round(r["final_avg_loss"], 4) for s, r in results.items()},
        "forgetting": {s: round(r["forgetting"], 4) for s, r in results.items()},
        "schedules": results,
        **targets(results),
        "annealed_checkpoint": annealed_summary([b for r in runs.get("infinite", []) for b in r["branches"]]),
        speed_key: round(tokens_per_s),
        "plot": os.path.relpath(png, ROOT),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    finish("continual", figures, quick=args.quick)


if __name__ == "__main__":
    main()
