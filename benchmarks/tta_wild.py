"""Test-time adaptation in the wild: coloured characters, 14 corruptions at severity 5,
batch 64 and batch 1, label-shifted and mixed streams; Source, NormAdapt, Tent, EATA,
SAR, NHL.

Data (benchmarks/tta_wild_data.py): 32 character classes rendered at 32×32 in colour
from every installed font that has them, on varied backgrounds, built offline and
cached outside the repository. Two source models, a small ResNet (SmallResNet) with
BatchNorm and the same with GroupNorm, are trained briefly on clean renders (Adam).
Test images of held-out renders are corrupted with the 14 corruptions of
operators.tta.corruptions at severity 5 (colour: tta_wild_data.corrupt_rgb) and
streamed through the engine (``stream.run``, micro-batches of 100 rows) in four settings:

- ``continual`` (batch 64): the corruptions one after the other, one operator;
- ``batch1``: the same stream at batch size 1;
- ``label_shift`` (batch 64): each corruption's rows sorted by class (the online
  imbalanced label shift of SAR's paper: a mini-batch holds one or two classes);
- ``mixed`` (batch 64): the rows of all corruptions shuffled into one stream.

Error % is averaged over the corruptions (mean ± std over seeds); the last quarter of
each stream is compared with Source's there (a collapse check). **Hyper-parameters** are
chosen per seed, model and setting on a validation stream made the same way from
held-out renders under the held-out corruptions (operators.tta.corruptions.VALIDATION:
speckle_noise, gaussian_blur, gamma, rotate, shear); the evaluation stream is never used
for choosing. Order of choice: NormAdapt's ``norm_window`` (BatchNorm model; the
GroupNorm model has no statistics to adapt, so NormAdapt does not apply), then
Tent's, EATA's and SAR's learning rates with that window, then NHL's Hebbian rule and
step on top of Tent's choice (``modulator="all_norm"``: NHL is Tent plus the Hebbian
first layer). EATA gets 256 clean training renders for its Fisher information.

Usage: ``python benchmarks/tta_wild.py [--quick] [--seeds 3] [--device auto]``
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import finish, parse_args  # noqa: E402
from torch import nn  # noqa: E402
from tta_lib import direct, stream_through  # noqa: E402
from tta_wild_data import CLASSES, characters, corrupt_rgb  # noqa: E402

from operators.tta import EATA, NHL, SAR, NormAdapt, Source, Tent  # noqa: E402
from operators.tta.corruptions import CORRUPTIONS, VALIDATION  # noqa: E402
from operators.tta.resnet import SmallResNet  # noqa: E402

METHODS: dict[str, type] = {"Source": Source, "NormAdapt": NormAdapt, "Tent": Tent, "EATA": EATA, "SAR": SAR,
                            "NHL": NHL}
ADAPTIVE = ("Tent", "EATA", "SAR", "NHL")
SETTINGS = {"continual": (64, "continual"), "batch1": (1, "continual"), "label_shift": (64, "sorted"),
            "mixed": (64, "mixed")}
ARCHS = {"bn": "batch", "gn": "group"}
SIZES = {  # images: train, validation (per held-out corruption), test (per corruption)
    # the loss stays near ln 32 for the first ~400 steps, then falls: quick trains ~800 steps
    False: dict(train=24000, val=300, test=600, width=16, epochs=8, fisher=256),
    True: dict(train=2048, val=16, test=24, width=8, epochs=25, fisher=64),
}


def grids(quick: bool) -> dict[str, list[dict]]:
    """Candidates per method (learning rates at batch 64, scaled by the operators)."""
    if quick:
        return {"NormAdapt": [dict(norm_window=64)], "Tent": [dict(lr=lr) for lr in (1e-3, 1e-2)],
                "EATA": [dict(lr=lr) for lr in (1e-2, 1e-1)], "SAR": [dict(lr=lr) for lr in (1e-2, 1e-1)],
                "NHL": [dict(rule="oja", hebbian_lr=1e-2)]}
    return {"NormAdapt": [dict(norm_window=w) for w in (16, 64, 256, 1024)],
            "Tent": [dict(lr=lr) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)],
            "EATA": [dict(lr=lr) for lr in (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)],
            "SAR": [dict(lr=lr) for lr in (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)],
            "NHL": [dict(rule=r, hebbian_lr=h) for r, h in itertools.product(("oja", "softhebb"), (1e-3, 1e-2))]}


def train_source(x: np.ndarray, y: np.ndarray, norm: str, width: int, epochs: int, seed: int,
                 device: torch.device) -> nn.Module:
    """SmallResNet on clean renders: Adam 3e-3, batch 64, cosine decay, no augmentation."""
    torch.manual_seed(seed)
    model = SmallResNet(3, len(CLASSES), width, norm).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * -(-len(x) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            idx = idx.to(device)
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval().cpu()


def build_stream(x: np.ndarray, y: np.ndarray, names: list[str], order: str,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and the corruption index of every row, in the setting's order."""
    xs, ys, ds = [], [], []
    for i, name in enumerate(names):
        xc = corrupt_rgb(x, name, 5, seed)
        rows = np.argsort(y, kind="stable") if order == "sorted" else np.arange(len(y))
        xs.append(xc[rows])
        ys.append(y[rows])
        ds.append(np.full(len(y), i))
    xs, ys, ds = np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)
    if order == "mixed":
        perm = np.random.default_rng([seed, 7]).permutation(len(ys))
        xs, ys, ds = xs[perm], ys[perm], ds[perm]
    return xs, ys, ds


def errors(pred: np.ndarray, y: np.ndarray, domain: np.ndarray, names: list[str]) -> dict[str, float]:
    """Error % per corruption, their mean, and the error on the stream's last quarter."""
    out = {n: 100.0 * float((pred[domain == i] != y[domain == i]).mean()) for i, n in enumerate(names)}
    out["mean"] = float(np.mean([out[n] for n in names]))
    q = len(y) * 3 // 4
    out["last_quarter"] = 100.0 * float((pred[q:] != y[q:]).mean())
    return out


def choose(model, arch: str, stream, bs: int, quick: bool, fisher: np.ndarray, device: str) -> dict[str, dict]:
    """Best hyper-parameters per method on a validation stream (mean error)."""
    x, y, d = stream
    names = list(VALIDATION)
    g = grids(quick)
    chosen: dict[str, dict] = {"Source": {}}

    def best(method: str, candidates: list[dict], extra: dict) -> dict:
        scores = []
        for hp in candidates:
            op = METHODS[method](model, batch_size=bs, device=device, **extra, **hp)
            scores.append(errors(direct(op, x), y, d, names)["mean"])
        return {**extra, **candidates[int(np.argmin(scores))]}

    common = best("NormAdapt", g["NormAdapt"], {}) if arch == "bn" else {"norm_window": 64}
    if arch == "bn":
        chosen["NormAdapt"] = common
    chosen["Tent"] = best("Tent", g["Tent"], common)
    chosen["EATA"] = best("EATA", g["EATA"], {**common, "fisher_data": fisher})
    chosen["SAR"] = best("SAR", g["SAR"], common)
    chosen["NHL"] = best("NHL", g["NHL"], {**chosen["Tent"], "modulator": "all_norm"})
    return chosen


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def printable(hp: dict) -> dict:
    return {k: (f"{len(v)} clean renders" if isinstance(v, np.ndarray) else v) for k, v in hp.items()}


def main() -> None:
    def extra(p):
        p.add_argument("--seeds", type=int, default=None)
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0 ...")
        p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of the settings")

    args = parse_args("tta_wild", __doc__.splitlines()[0], extra=extra)
    quick = args.quick
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cpu":
        torch.set_num_threads(1)
    size = SIZES[quick]
    seeds = [args.seed + i for i in range(args.seeds or (1 if quick else 3))]
    settings = [s for s in args.settings.split(",") if s]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"tta_wild: unknown setting(s) {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    names, val_names = list(CORRUPTIONS), list(VALIDATION)
    t_start = time.perf_counter()

    table: dict = {}       # [setting][arch][method] -> {"mean": [...], "last_quarter": [...], per corruption}
    chosen_all: dict = {}  # [seed][setting][arch] -> hyper-parameters
    clean: dict = {a: [] for a in ARCHS}
    fonts, cache = None, None
    n_train, n_val, n_test = size["train"], size["val"], size["test"]
    for seed in seeds:
        data = characters(n_train + n_val + n_test, seed)
        fonts, cache = data["fonts"], data["cache"]
        x, y = data["images"], data["labels"]
        xtr, ytr = x[:n_train], y[:n_train]
        xv, yv = x[n_train:n_train + n_val], y[n_train:n_train + n_val]
        xte, yte = x[n_train + n_val:], y[n_train + n_val:]
        fisher = xtr[:size["fisher"]]
        models = {a: train_source(xtr, ytr, norm, size["width"], size["epochs"], seed, device)
                  for a, norm in ARCHS.items()}
        for a, m in models.items():
            with torch.no_grad():
                clean[a].append(100 * float((m(torch.from_numpy(xte)).argmax(1).numpy() != yte).mean()))
        print(f"seed {seed}: clean error {({a: round(v[-1], 2) for a, v in clean.items()})}, "
              f"{time.perf_counter() - t_start:.0f} s", flush=True)
        chosen_all[seed] = {}
        for setting in settings:
            bs, order = SETTINGS[setting]
            val = build_stream(xv, yv, val_names, order, seed)
            test = build_stream(xte, yte, names, order, seed)
            chosen_all[seed][setting] = {}
            for arch, model in models.items():
                hps = chosen_all[seed][setting][arch] = choose(model, arch, val, bs, quick, fisher, str(device))
                for method, hp in hps.items():
                    op = METHODS[method](model, batch_size=bs, device=device, **hp)
                    pred, _ = stream_through(op, test[0])
                    cell = table.setdefault(setting, {}).setdefault(arch, {}).setdefault(method, {})
                    for k, v in errors(pred, test[1], test[2], names).items():
                        cell.setdefault(k, []).append(v)
                    cell.setdefault("resets", []).append(op.resets)
                print(f"seed {seed} {setting} {arch}: " + ", ".join(
                    f"{m} {table[setting][arch][m]['mean'][-1]:.1f}" for m in hps)
                    + f" ({time.perf_counter() - t_start:.0f} s)", flush=True)

    results = {s: {a: {m: {k: mean_std(v) for k, v in cells.items()} for m, cells in per_arch.items()}
                   for a, per_arch in per_s.items()} for s, per_s in table.items()}
    summary: dict = {}
    for s, per_s in results.items():
        norm_adapt = per_s["bn"]["NormAdapt"]["mean"]["mean"]
        row = {f"{a}/{m}": cell["mean"]["mean"] for a, per_arch in per_s.items() for m, cell in per_arch.items()}
        best = min((v, k) for k, v in row.items() if k.split("/")[1] in ADAPTIVE)
        collapsed = [f"{a}/{m}" for a, per_arch in per_s.items() for m, cell in per_arch.items()
                     if cell["last_quarter"]["mean"] > per_arch["Source"]["last_quarter"]["mean"]]
        summary[s] = {"batch_size": SETTINGS[s][0], "error": row, "best": best[1], "best_error": best[0],
                      "normadapt_bn_error": norm_adapt, "gap_best_vs_normadapt": norm_adapt - best[0],
                      "nhl_minus_tent": {a: per_s[a]["NHL"]["mean"]["mean"] - per_s[a]["Tent"]["mean"]["mean"]
                                         for a in per_s},
                      "last_quarter_worse_than_source": collapsed}
    figures = {
        "dataset": f"{len(CLASSES)} characters ({CLASSES}), 32x32 colour renders: train {n_train}, "
                   f"validation {n_val} per held-out corruption, test {n_test} per corruption",
        "fonts": fonts, "n_fonts": len(fonts or []), "dataset_cache": cache,
        "model": f"SmallResNet width {size['width']} (BatchNorm 'bn', GroupNorm 'gn'), "
                 f"{size['epochs']} epochs on clean renders",
        "severity": 5, "corruptions": names, "validation_corruptions": val_names,
        "settings": {s: {"batch_size": SETTINGS[s][0], "order": SETTINGS[s][1]} for s in settings},
        "seeds": seeds, "clean_error": {a: mean_std(v) for a, v in clean.items()},
        "summary": summary, "results": results,
        "hyperparameters": {str(s): {st: {a: {m: printable(hp) for m, hp in per_a.items()}
                                          for a, per_a in per_st.items()} for st, per_st in per.items()}
                            for s, per in chosen_all.items()},
        "device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "wall_s": time.perf_counter() - t_start,
    }
    finish("tta_wild", figures, quick=quick)


if __name__ == "__main__":
    main()
