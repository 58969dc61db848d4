"""Fully test-time adaptation on corrupted 8×8 digits: Source, NormAdapt, Tent, NHL.

A small CNN with BatchNorm is trained on clean scikit-learn digits (1000 images); the
test split (500 images) is corrupted with the 14 CIFAR-10-C corruptions of
operators.tta.corruptions at severity 5 and streamed through the engine
(``stream.run``, micro-batches of 100 rows that never line up with the operators'
mini-batches). Reported per method and batch size (1, 16, 64), over seeds:

- error % per corruption and on average, **continual** (all corruptions one after the
  other through one operator) and **reset** (a fresh operator per corruption);
- per-sample operator latency, and the adaptation cost at batch 64 relative to plain
  inference (Source), measured in the same process, one CPU thread;
- the **collapse check**: the continual stream repeated 10× (fresh noise each pass); the
  error of the last pass against Source, with reset policy ``none`` and ``collapse``.

Hyper-parameters are chosen per seed and batch size on a **validation** stream: the
held-out validation images (297) under the held-out corruptions
(operators.tta.corruptions.VALIDATION: speckle_noise, gaussian_blur, gamma, rotate,
shear), severity 5, continual. The evaluation stream is never used for choosing
anything. Order of choice (see :func:`grids`): NormAdapt's ``norm_window``; Tent's ``lr``
and ``loss_stats`` with that window; NHL's Hebbian rule, step and temperature on top of
Tent's choice (NHL's modulator is Tent's parameters, so NHL is Tent plus the Hebbian
first layer).

Usage: ``python benchmarks/tta.py [--quick] [--seeds 3]``
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import finish, parse_args  # noqa: E402
from tta_lib import METHODS, corrupted_stream, digits_splits, evaluate, stream_through, train_source  # noqa: E402

from operators.tta.corruptions import CORRUPTIONS, VALIDATION  # noqa: E402


def grids(quick: bool, bs: int) -> dict[str, list[dict]]:
    """Candidate hyper-parameters per method.

    NormAdapt chooses ``norm_window``; Tent takes it and chooses ``lr`` and
    ``loss_stats``; NHL takes all of Tent's (its modulator is Tent's parameters,
    ``modulator="all_norm"``, so NHL is Tent plus the Hebbian first layer) and chooses
    only the Hebbian rule, its step and its temperature (``hebbian_lr`` 0 is not a
    candidate: that would be Tent). Learning rates are given at batch 64; the operators
    scale them linearly with the batch size (a batch-1 stream takes 64 times as many steps).
    """
    windows = [16, 64, 256] if quick else [16, 64, 256, 1024]
    lrs = [1e-3, 1e-2] if quick else [3e-4, 1e-3, 3e-3, 1e-2]
    loss_stats = ["batch"] if quick else ["batch", "running"]
    rules = ["oja", "softhebb"]
    hebbian_lrs = [1e-3, 1e-2] if quick else [1e-3, 3e-3, 1e-2]
    temperatures = [1.0] if quick else [1.0, 0.3]
    return {"NormAdapt": [dict(norm_window=w) for w in windows],
            "Tent": [dict(lr=lr, loss_stats=ls) for ls, lr in itertools.product(loss_stats, lrs)],
            "NHL": [dict(rule=r, hebbian_lr=h, temperature=t)
                    for r, h, t in itertools.product(rules, hebbian_lrs, temperatures)]}


def choose(model, val, bs: int, quick: bool) -> dict[str, dict]:
    """Best hyper-parameters per method on the validation stream (continual error)."""
    x, y, seg = val
    chosen: dict[str, dict] = {"Source": {}}

    def best(method: str, candidates: list[dict], extra: dict) -> dict:
        scores = []
        for hp in candidates:
            r = evaluate(partial(METHODS[method], model, batch_size=bs, **extra, **hp), x, y, seg,
                         "continual", engine=False)
            scores.append(r["errors"]["mean"])
        return {**extra, **candidates[int(np.argmin(scores))]}

    g = grids(quick, bs)
    chosen["NormAdapt"] = best("NormAdapt", g["NormAdapt"], {})
    chosen["Tent"] = best("Tent", g["Tent"], {"norm_window": chosen["NormAdapt"]["norm_window"]})
    chosen["NHL"] = best("NHL", g["NHL"], {**chosen["Tent"], "modulator": "all_norm"})
    return chosen


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def timing(model, hps: dict[str, dict], x: np.ndarray, repeats: int) -> dict[str, float]:
    """Operator seconds per sample at batch 64, best of ``repeats`` engine runs."""
    out = {}
    for method in METHODS:
        out[method] = min(stream_through(METHODS[method](model, batch_size=64, **hps[method]), x)[1]
                          for _ in range(repeats))
    return out


def main() -> None:
    args = parse_args("tta", __doc__.splitlines()[0],
                      extra=lambda p: p.add_argument("--seeds", type=int, default=None))
    torch.set_num_threads(1)
    quick = args.quick
    n_seeds = args.seeds or (1 if quick else 3)
    seeds = [args.seed + i for i in range(n_seeds)]
    batch_sizes = [16, 64] if quick else [1, 16, 64]
    corruptions = list(CORRUPTIONS)
    repeat_long = 2 if quick else 10
    t_start = time.perf_counter()

    table: dict = {}        # [bs][mode][method][corruption] -> list over seeds
    chosen_all: dict = {}   # [seed][bs][method] -> hyper-parameters
    latency: dict = {}      # [bs][method] -> list of s/sample (from the evaluation runs)
    cost: dict = {m: [] for m in METHODS}
    collapse: dict = {}     # [policy][method] -> list of last-pass error
    clean = []
    for seed in seeds:
        d = digits_splits(seed)
        xtr, ytr = d["train"]
        if quick:
            xtr, ytr = xtr[:600], ytr[:600]
        model = train_source(xtr, ytr, seed, epochs=15 if quick else 40)
        xte, yte = d["test"]
        with torch.no_grad():
            clean.append(100 * float((model(torch.from_numpy(xte).unsqueeze(1)).argmax(1).numpy()
                                      != yte).mean()))
        xv, yv = d["val"]
        val = corrupted_stream(xv[:150] if quick else xv, yv[:150] if quick else yv,
                               list(VALIDATION), 5, seed)
        test = corrupted_stream(xte[:200] if quick else xte, yte[:200] if quick else yte,
                                corruptions, 5, seed)
        chosen_all[seed] = {}
        for bs in batch_sizes:
            hps = chosen_all[seed][bs] = choose(model, val, bs, quick)
            for mode in ("continual", "reset"):
                for method in METHODS:
                    r = evaluate(partial(METHODS[method], model, batch_size=bs, **hps[method]),
                                 *test, mode)
                    cell = table.setdefault(bs, {}).setdefault(mode, {}).setdefault(method, {})
                    for k, v in r["errors"].items():
                        cell.setdefault(k, []).append(v)
                    if mode == "continual":
                        latency.setdefault(bs, {}).setdefault(method, []).append(r["s_per_sample"])
            print(f"seed {seed} bs {bs}: " + ", ".join(
                f"{m} {table[bs]['continual'][m]['mean'][-1]:.1f}" for m in METHODS), flush=True)
        hps64 = chosen_all[seed][64]
        t = timing(model, hps64, test[0], 2 if quick else 3)
        for m in METHODS:
            cost[m].append(t[m] / t["Source"])
        # collapse check: the continual stream 10x longer, last pass against Source
        long_x, long_y, long_seg = corrupted_stream(xte[:200] if quick else xte,
                                                    yte[:200] if quick else yte,
                                                    corruptions, 5, seed, repeat=repeat_long)
        last = len(long_x) - len(test[0])
        for policy in ("none", "collapse"):
            for method in METHODS:
                if method == "Source" and policy != "none":
                    continue
                op = METHODS[method](model, batch_size=64,
                                     **{**hps64[method], "reset": policy})
                pred, _ = stream_through(op, long_x)
                err = 100 * float((pred[last:] != long_y[last:]).mean())
                collapse.setdefault(policy, {}).setdefault(method, []).append(err)
                collapse.setdefault(f"{policy}_resets", {}).setdefault(method, []).append(op.resets)
        print(f"seed {seed}: collapse check {({p: {m: v[-1] for m, v in c.items()} for p, c in collapse.items()})}",
              flush=True)

    results = {str(bs): {mode: {m: {k: mean_std(v) for k, v in cells.items()}
                                for m, cells in modes.items()}
                         for mode, modes in per_bs.items()}
               for bs, per_bs in table.items()}
    cont64 = results["64"]["continual"]
    continual_s5 = {m: cont64[m]["mean"]["mean"] for m in METHODS}
    order_met = continual_s5["NHL"] < continual_s5["Tent"] < continual_s5["NormAdapt"] < continual_s5["Source"]
    src_last = np.mean(collapse["none"]["Source"])
    figures = {
        "dataset": "sklearn digits 8x8: train 1000 / val 297 / test 500" + (" (quick: subsets)" if quick else ""),
        "severity": 5,
        "corruptions": corruptions,
        "validation_corruptions": list(VALIDATION),
        "seeds": seeds,
        "batch_sizes": batch_sizes,
        "clean_error": mean_std(clean),
        "continual_s5_error": continual_s5,
        "continual_s5_error_std": {m: cont64[m]["mean"]["std"] for m in METHODS},
        "continual_s5_error_by_batch_size": {bs: {m: results[bs]["continual"][m]["mean"]["mean"]
                                                  for m in METHODS} for bs in results},
        "reset_s5_error_by_batch_size": {bs: {m: results[bs]["reset"][m]["mean"]["mean"]
                                              for m in METHODS} for bs in results},
        "target_order_NHL<Tent<NormAdapt<Source": bool(order_met),
        "results": results,
        "latency_us_per_sample": {str(bs): {m: 1e6 * float(np.mean(v)) for m, v in per.items()}
                                  for bs, per in latency.items()},
        "adaptation_cost_vs_inference_bs64": {m: mean_std(v) for m, v in cost.items()},
        "collapse_check": {
            "stream": f"continual severity-5 stream repeated {repeat_long}x, batch size 64",
            "last_pass_error": {p: {m: mean_std(v) for m, v in c.items()}
                                for p, c in collapse.items() if not p.endswith("_resets")},
            "resets": {p.removesuffix("_resets"): {m: float(np.mean(v)) for m, v in c.items()}
                       for p, c in collapse.items() if p.endswith("_resets")},
            "none_worse_than_source": {p: {m: bool(np.mean(v) > src_last) for m, v in c.items()}
                                       for p, c in collapse.items() if not p.endswith("_resets")},
        },
        "hyperparameters": {str(s): {str(bs): hp for bs, hp in per.items()} for s, per in chosen_all.items()},
        "threads": 1,
        "gpu": None,
        "wall_s": time.perf_counter() - t_start,
    }
    finish("tta", figures, quick=quick)


if __name__ == "__main__":
    main()
