"""Test-time adaptation in the wild: coloured characters, 14 corruptions at severity 5,
batch 64 and batch 1, label-shifted and mixed streams; Source, NormAdapt, Tent, EATA,
SAR, NHL.

Data (benchmarks/tta_wild_data.py): 32 character classes rendered at 32×32 in colour
from every installed font that has them, on varied backgrounds, built offline and
cached outside the repository (``$HEBBSTREAM_CACHE``, default ``<tmp>/hebbstream-cache``).
Two source models, a SmallResNet (width 8, stride-2 stem: CPU-sized) with BatchNorm
(``bn``) and the same with GroupNorm (``gn``), are trained once on 20,000 clean renders
(2,000 Adam steps of 64; benchmarks/tta_wild_models.py, cached too) and shared by the
seeds, as TTA benchmarks share one pretrained model; a seed draws its own validation and test renders,
corruption noise and stream order. Test images are corrupted with the 14 corruptions
of operators.tta.corruptions at severity 5 (CIFAR-10-C's 15 without ``frost``, which
needs photographs; colour: tta_wild_data.corrupt_rgb) and streamed through the engine
(``stream.run``, micro-batches of 100 rows) in four settings:

- ``continual`` (batch 64): the corruptions one after the other, one operator;
- ``batch1``: the same stream at batch size 1 (its first ``test_b1`` images per
  corruption: batch 1 costs a step per row);
- ``label_shift`` (batch 64): each corruption's rows sorted by class (the online
  imbalanced label shift of SAR's paper: a mini-batch holds one or two classes);
- ``mixed`` (batch 64): the rows of all corruptions shuffled into one stream.

Error % is averaged over the corruptions (mean ± std over seeds, per-seed values in the
JSON); the last quarter of each stream is compared with Source's there, per seed (a
collapse check). **Hyper-parameters** are chosen per model on the first seed's
validation stream, made as ``continual``'s from other renders under the held-out
corruptions only (operators.tta.corruptions.VALIDATION: speckle_noise, gaussian_blur,
gamma, rotate, shear; none of them is in the reported 14); the evaluation streams are
never used for choosing, and the other seeds reuse the choice. The wild settings reuse
``continual``'s choice, as SAR's paper keeps one set of hyper-parameters across its
wild settings (the operators scale learning rates with the batch size). Order of choice: NormAdapt's
``norm_window`` (BatchNorm model; the GroupNorm model has no statistics to adapt, so
NormAdapt does not apply and the others take the default window), then Tent's, EATA's
and SAR's learning rates with that window, then NHL's Hebbian rule and step on top of
Tent's choice (``modulator="all_norm"``: NHL is Tent plus the Hebbian first layer).
EATA gets 256 clean training renders for its Fisher information.

``--defaults`` runs every method with its own defaults instead (the collapse check of
the defaults; results/tta_wild_defaults.json).

Usage: ``python benchmarks/tta_wild.py [--quick] [--defaults] [--seeds 3] [--settings ...] [--device auto]``
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import finish, parse_args  # noqa: E402
from tta_lib import direct, stream_through  # noqa: E402
from tta_wild_data import CLASSES, cache_dir, characters, corrupt_rgb  # noqa: E402
from tta_wild_models import source_model  # noqa: E402

from operators.tta import EATA, NHL, SAR, NormAdapt, Source, Tent  # noqa: E402
from operators.tta.corruptions import CORRUPTIONS, VALIDATION  # noqa: E402

METHODS: dict[str, type] = {"Source": Source, "NormAdapt": NormAdapt, "Tent": Tent, "EATA": EATA, "SAR": SAR,
                            "NHL": NHL}
ADAPTIVE = ("Tent", "EATA", "SAR", "NHL")
SETTINGS = {"continual": (64, "continual"), "batch1": (1, "continual"), "label_shift": (64, "sorted"),
            "mixed": (64, "mixed")}
#: settings whose hyper-parameters are another setting's (see the module docstring)
CHOICE_FROM = {"batch1": "continual", "label_shift": "continual", "mixed": "continual"}
ARCHS = {"bn": "batch", "gn": "group"}
SIZES = {  # train: clean renders; val / test: images per held-out / reported corruption
    False: dict(train=20000, val=96, test=256, test_b1=24, width=8, stem_stride=2,
                 steps={"bn": 2000, "gn": 2000}, fisher=256),
    True: dict(train=2048, val=16, test=8, test_b1=4, width=8, stem_stride=2,
                 steps={"bn": 150, "gn": 150}, fisher=64),
}


def grids(quick: bool) -> dict[str, list[dict]]:
    """Candidates per method (learning rates at batch 64, scaled by the operators)."""
    if quick:
        return {"NormAdapt": [dict(norm_window=64)], "Tent": [dict(lr=1e-3)], "EATA": [dict(lr=3e-2)],
                "SAR": [dict(lr=3e-2)], "NHL": [dict(rule="oja", hebbian_lr=1e-2)]}
    return {"NormAdapt": [dict(norm_window=w) for w in (16, 64, 256)],
            "Tent": [dict(lr=lr) for lr in (3e-4, 1e-3, 3e-3)],
            "EATA": [dict(lr=lr) for lr in (1e-2, 3e-2, 1e-1)],
            "SAR": [dict(lr=lr) for lr in (1e-2, 3e-2, 1e-1)],
            "NHL": [dict(rule=r, hebbian_lr=h) for r, h in (("oja", 1e-3), ("oja", 1e-2), ("softhebb", 1e-2))]}


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


def choose(model, arch: str, stream, quick: bool, fisher: np.ndarray, device: str) -> dict[str, dict]:
    """Best hyper-parameters per method on a validation stream at batch 64 (mean error)."""
    x, y, d = stream
    names = list(VALIDATION)
    g = grids(quick)
    chosen: dict[str, dict] = {"Source": {}}

    def best(method: str, candidates: list[dict], extra: dict) -> dict:
        if len(candidates) == 1:
            return {**extra, **candidates[0]}
        scores = []
        for hp in candidates:
            op = METHODS[method](model, batch_size=64, device=device, **extra, **hp)
            scores.append(errors(direct(op, x), y, d, names)["mean"])
        return {**extra, **candidates[int(np.argmin(scores))]}

    common = best("NormAdapt", g["NormAdapt"], {}) if arch == "bn" else {}
    if arch == "bn":
        chosen["NormAdapt"] = common
    chosen["Tent"] = best("Tent", g["Tent"], common)
    chosen["EATA"] = best("EATA", g["EATA"], {**common, "fisher_data": fisher})
    chosen["SAR"] = best("SAR", g["SAR"], common)
    chosen["NHL"] = best("NHL", g["NHL"], {**chosen["Tent"], "modulator": "all_norm"})
    return chosen


def mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values),
            "per_seed": [float(v) for v in values]}


def printable(hp: dict) -> dict:
    return {k: (f"{len(v)} clean renders" if isinstance(v, np.ndarray) else v) for k, v in hp.items()}


def summarise(table: dict) -> tuple[dict, dict]:
    """Mean ± std per cell, and per setting: errors, the best hebbstream operator against
    NormAdapt, NHL against Tent, and every stream whose last quarter errs more than
    Source's on the same seed's stream."""
    results = {s: {a: {m: {k: mean_std(v) for k, v in cells.items()} for m, cells in per_arch.items()}
                   for a, per_arch in per_s.items()} for s, per_s in table.items()}
    summary: dict = {}
    for s, per_s in results.items():
        row = {f"{a}/{m}": cell["mean"]["mean"] for a, per_arch in per_s.items() for m, cell in per_arch.items()}
        best = min((v, k) for k, v in row.items() if k.split("/")[1] in ADAPTIVE)
        worse = {}
        for a, per_arch in table[s].items():
            src = per_arch["Source"]["last_quarter"]
            for m, cells in per_arch.items():
                seeds = [i for i, v in enumerate(cells["last_quarter"]) if v > src[i]]
                if m != "Source" and seeds:
                    worse[f"{a}/{m}"] = {"seeds": seeds, "last_quarter": cells["last_quarter"], "source": src}
        entry = {"batch_size": SETTINGS[s][0], "error": row, "best": best[1], "best_error": best[0],
                 "nhl_minus_tent": {a: per_s[a]["NHL"]["mean"]["mean"] - per_s[a]["Tent"]["mean"]["mean"]
                                    for a in per_s},
                 "last_quarter_worse_than_source": worse}
        if "bn" in per_s:
            entry["normadapt_bn_error"] = per_s["bn"]["NormAdapt"]["mean"]["mean"]
            entry["gap_best_vs_normadapt"] = entry["normadapt_bn_error"] - best[0]
        summary[s] = entry
    return results, summary


def main() -> None:
    def extra(p):
        p.add_argument("--seeds", type=int, default=None)
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0 ...")
        p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of the settings")
        p.add_argument("--defaults", action="store_true",
                       help="every method with its own defaults (no choice; EATA still gets its clean renders); "
                            "writes results/tta_wild_defaults.json")

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
    timing: dict[str, float] = {"source_models": 0.0, "choice": 0.0, "streams": 0.0}

    train = characters(size["train"], args.seed)
    fisher = train["images"][:size["fisher"]]
    models, model_info = {}, {}
    t = time.perf_counter()
    for a, norm in ARCHS.items():
        models[a], info = source_model(train, norm, size["width"], size["stem_stride"], size["steps"][a],
                                             args.seed)
        model_info[a] = {"cached": info["cached"], "train_s": info["train_s"]}
    timing["source_models"] = time.perf_counter() - t
    print(f"source models {model_info} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    table: dict = {}       # [setting][arch][method] -> {"mean": [...], "last_quarter": [...], per corruption}
    chosen: dict = {}      # [choice setting][arch] -> hyper-parameters (first seed's validation stream)
    clean: dict = {a: [] for a in ARCHS}
    n_val, n_test = size["val"], size["test"]
    for seed in seeds:
        # a seed's own renders: validation then test images (the training set is the models')
        data = characters(n_val + n_test, 1000 + seed)
        x, y = data["images"], data["labels"]
        xv, yv, xte, yte = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
        for a, m in models.items():
            with torch.no_grad():
                clean[a].append(100 * float((m(torch.from_numpy(xte)).argmax(1).numpy() != yte).mean()))
        print(f"seed {seed}: clean error {({a: round(v[-1], 2) for a, v in clean.items()})}", flush=True)
        for setting in settings:
            bs, order = SETTINGS[setting]
            key = CHOICE_FROM.get(setting, setting)
            if key not in chosen and args.defaults:
                chosen[key] = {arch: {m: ({"fisher_data": fisher} if m == "EATA" else {}) for m in METHODS
                                      if arch == "bn" or m != "NormAdapt"} for arch in models}
            if key not in chosen:
                t = time.perf_counter()
                val = build_stream(xv, yv, val_names, SETTINGS[key][1], seed)
                chosen[key] = {arch: choose(model, arch, val, quick, fisher, str(device))
                               for arch, model in models.items()}
                timing["choice"] += time.perf_counter() - t
            t = time.perf_counter()
            rows = slice(None) if bs > 1 else slice(size["test_b1"])
            test = build_stream(xte[rows], yte[rows], names, order, seed)
            for arch, model in models.items():
                for method, hp in chosen[key][arch].items():
                    op = METHODS[method](model, batch_size=bs, device=device, **hp)
                    pred, _ = stream_through(op, test[0])
                    cell = table.setdefault(setting, {}).setdefault(arch, {}).setdefault(method, {})
                    for k, v in errors(pred, test[1], test[2], names).items():
                        cell.setdefault(k, []).append(v)
                    cell.setdefault("resets", []).append(op.resets)
                print(f"seed {seed} {setting} {arch}: " + ", ".join(
                    f"{m} {table[setting][arch][m]['mean'][-1]:.1f}" for m in chosen[key][arch])
                    + f" ({time.perf_counter() - t_start:.0f} s)", flush=True)
            timing["streams"] += time.perf_counter() - t

    results, summary = summarise(table)
    rows_per = {s: (size["test"] if SETTINGS[s][0] > 1 else size["test_b1"]) * len(names) for s in settings}
    figures = {
        "dataset": f"{len(CLASSES)} characters ({CLASSES}), 32x32 colour renders: train {size['train']} "
                   f"(seed {args.seed}); per seed, validation {n_val} images per held-out corruption and test "
                   f"{n_test} per corruption ({size['test_b1']} at batch 1)",
        "fonts": train["fonts"], "n_fonts": len(train["fonts"]),
        "cache": os.path.dirname(train["cache"]).replace(cache_dir(), "CACHE"),
        "model": f"SmallResNet width {size['width']}, stem stride {size['stem_stride']} (BatchNorm 'bn', "
                 f"GroupNorm 'gn'), {size['steps']} Adam steps of 64 clean renders, one model per norm for all seeds",
        "source_models": model_info,
        "severity": 5, "corruptions": names, "validation_corruptions": val_names,
        "settings": {s: {"batch_size": SETTINGS[s][0], "order": SETTINGS[s][1], "rows": rows_per[s],
                         "hyperparameters_from": CHOICE_FROM.get(s, s)} for s in settings},
        "seeds": seeds, "clean_error": {a: mean_std(v) for a, v in clean.items()},
        "summary": summary, "results": results,
        "hyperparameters": {st: {a: {m: printable(hp) for m, hp in per_a.items()} for a, per_a in per_st.items()}
                            for st, per_st in chosen.items()},
        "hyperparameter_grids": None if args.defaults else {m: [printable(c) for c in cands]
                                                            for m, cands in grids(quick).items()},
        "device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "timing_s": timing, "wall_s": time.perf_counter() - t_start,
    }
    finish("tta_wild_defaults" if args.defaults else "tta_wild", figures, quick=quick)


if __name__ == "__main__":
    main()
