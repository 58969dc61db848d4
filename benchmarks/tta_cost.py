"""The cost of test-time adaptation at batch 64 against plain inference, with every
operator's defaults (Tent, EATA, SAR and NHL: ``reset="collapse"``, whose detector runs
the source model on up to 16 rows per mini-batch) and, for comparison, ``reset="none"``.

The setting of benchmarks/tta.py: the SmallCNN (BatchNorm) trained on clean 8×8 digits,
its test split under the 14 corruptions at severity 5 as one continual stream
(7,000 rows) through the engine (``stream.run``, micro-batches of 100 rows), one CPU
thread. The figure is the operator's own time per row (the engine's per-operator
clock), best of ``repeats`` runs, divided by Source's (the same model, no adaptation)
measured in the same rounds; the runs of one round alternate between the operators, so
a load change on a shared machine hits them alike. Hyper-parameters do not change the
cost (except NHL's ``modulator``, reported both ways: its default ``"layer1"`` and
``"all_norm"``, the setting benchmarks/tta.py reports).

Usage: ``python benchmarks/tta_cost.py [--quick] [--seeds 3] [--repeats 3]``
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import finish, parse_args  # noqa: E402
from tta_lib import corrupted_stream, digits_splits, stream_through, train_source  # noqa: E402

from operators.tta import EATA, NHL, SAR, NormAdapt, Source, Tent  # noqa: E402
from operators.tta.corruptions import CORRUPTIONS  # noqa: E402

#: name -> (operator, parameters beyond the defaults)
VARIANTS: dict[str, tuple[type, dict]] = {
    "Source": (Source, {}), "NormAdapt": (NormAdapt, {}),
    "Tent": (Tent, {}), "Tent reset=none": (Tent, {"reset": "none"}),
    "EATA": (EATA, {}), "EATA reset=none": (EATA, {"reset": "none"}),
    "SAR": (SAR, {}), "SAR reset=none": (SAR, {"reset": "none"}),
    "NHL": (NHL, {}), "NHL reset=none": (NHL, {"reset": "none"}),
    "NHL all_norm": (NHL, {"modulator": "all_norm"}),
}


def ratios(model, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Operator seconds per row, best of ``repeats`` alternating rounds, over Source's."""
    best = {name: float("inf") for name in VARIANTS}
    for _ in range(repeats):
        for name, (cls, params) in VARIANTS.items():
            best[name] = min(best[name], stream_through(cls(model, batch_size=64, device="cpu", **params), x)[1])
    return {name: best[name] / best["Source"] for name in VARIANTS} | {"source_us_per_row": 1e6 * best["Source"]}


def main() -> None:
    def extra(p):
        p.add_argument("--seeds", type=int, default=None)
        p.add_argument("--repeats", type=int, default=None)

    args = parse_args("tta_cost", __doc__.splitlines()[0], extra=extra)
    torch.set_num_threads(1)
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    repeats = args.repeats or (2 if args.quick else 3)
    t_start = time.perf_counter()
    per_seed: list[dict[str, float]] = []
    for seed in seeds:
        d = digits_splits(seed)
        model = train_source(*d["train"], seed, epochs=15 if args.quick else 40)
        xte, yte = d["test"]
        if args.quick:
            xte, yte = xte[:100], yte[:100]
        x, _, _ = corrupted_stream(xte, yte, list(CORRUPTIONS), 5, seed)
        per_seed.append(ratios(model, x, repeats))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in per_seed[-1].items()), flush=True)
    figures = {
        "setting": "SmallCNN (BatchNorm) on 8x8 digits, 14 corruptions at severity 5 as one continual stream "
                   f"({len(x)} rows), batch 64, operator defaults, 1 CPU thread",
        "seeds": seeds, "repeats": repeats,
        "cost_vs_inference": {k: {"mean": float(np.mean([r[k] for r in per_seed])),
                                  "std": float(np.std([r[k] for r in per_seed])),
                                  "per_seed": [r[k] for r in per_seed]} for k in per_seed[0]},
        "target": "adaptation <= 3x inference at batch 64",
        "threads": 1, "wall_s": time.perf_counter() - t_start,
    }
    finish("tta_cost", figures, quick=args.quick)


if __name__ == "__main__":
    main()
