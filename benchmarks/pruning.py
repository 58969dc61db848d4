"""Dynamic pruning (Fire Together Wire Together): accuracy, FLOPs and real CPU speed.

A 4-conv CNN with batch norm (widths 32-64-128-128) is trained on scikit-learn's 8×8
digits, bilinearly upsampled to 32×32 (``--size``). Why upsample: at 8×8 a batch-1
forward pass of this network is ~0.1 ms and Python's per-layer overhead, not compute,
sets the time, so no pruning method could show a wall-clock gain; at 32×32 the convs
dominate (a half-width copy of the net runs ~2.2× faster), which is the regime where
skipping filters can pay (at 24×24 the sparse path's per-layer gathers and mask
predictions still ate most of the gain in our measurements). The digits stay the same data; no download.

For every r in {0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0} (plus 0.65 in the full run) a copy
of the dense model gets mask predictors trained with the heatmap-mass targets (decoupled)
while the backbone is fine-tuned with the masks applied
(:func:`operators.pruning.training.fit_masks`). On the held-out 22 % the script reports:

- ``accuracy`` and ``accuracy_drop`` (points, dense − pruned);
- ``flops_reduction``: 1 − mean per-sample MACs (mask predictors included) / dense MACs;
- batch-1 wall clock, one thread, the variants interleaved image by image so load from
  other processes hits all alike, medians: ``speedup_b1`` is the user's stock dense
  ``nn.Sequential`` over the sparse executor; ``speedup_b1_like_for_like`` is the *same*
  executor with every filter kept (batch norm folded, same pooling, same TorchScript
  function, no predictors, no gathers) over the sparse one — the gain of pruning alone,
  which is what ``target_met`` judges (``cpu_speedup_b1_like_for_like``: the same ratio
  in thread CPU time; ``speedup_b1_fast_path_alone``: stock over fast dense;
  ``speedup_b1_vs_compiled_dense``: ``torch.compile`` of the stock model over the sparse
  executor, a reference where inductor and a C++ compiler are available);
- ``speedup_b64``: the same at batch 64 for each batch strategy (union of the batch's
  masks, per-sample gathered weights as one grouped conv, a loop of batch-1 passes),
  against the stock model and (``_like_for_like``) the folded dense executor.

The same sweep (r ∈ {0.7, 0.8, 0.9, 1.0}) runs on MNIST-1D (``mnist1d`` package, 40-sample
signals generated locally, 4000 train / 1000 test) with a ``Conv1d`` CNN of the same widths,
pruned as its exact ``Conv2d`` (1 × k) equivalent (:mod:`operators.pruning.conv1d`): its
dense forward is ~1.1 M MACs, ~30× less than the digits CNN, so per-layer overhead rather
than compute sets its batch-1 time.

Then the ``DynamicPruning`` operator replays the test images as a stream at the chosen r
(10 % shadow samples) and reports its miss rate: of the filters the masks dropped on
shadow events, the fraction the dense targets kept.

Run: ``python benchmarks/pruning.py`` (≈ 11 min on 2 shared cores, MNIST-1D included) or ``--quick`` (< 1 min,
small subset at 16×16, fewer epochs: a smoke test, not the figures).
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import RESULTS, finish, parse_args
from torch import nn  # noqa: E402

from operators.pruning import DynamicPruning, PrunableNetwork, SparseExecutor  # noqa: E402
from operators.pruning.conv1d import as_conv2d  # noqa: E402
from operators.pruning.training import fit_masks, train_classifier  # noqa: E402
from stream import Batch  # noqa: E402

RATIOS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
#: Below the paper's CIFAR range, to find where the FLOPs reduction passes 50 % (full run).
EXTRA_RATIOS = (0.65,)
#: MNIST-1D: a shorter sweep (its network is ~30× smaller; see the module docstring).
MNIST1D_RATIOS = (0.7, 0.8, 0.9, 1.0)
MNIST1D_EPOCHS = 15


def digits(size: int, seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.78 * len(x))
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]


def conv_blocks(widths, dims: int, first_kernel: int) -> list[nn.Module]:
    """The four conv + batch-norm + ReLU blocks (max pooling after the 1st and 3rd) of
    both benchmark CNNs, 2-D (digits) or 1-D (MNIST-1D), on one input channel."""
    conv, norm, pool = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2
                        else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d))
    a, b, c, d = widths
    return [conv(1, a, first_kernel, padding=first_kernel // 2), norm(a), nn.ReLU(), pool(2),
            conv(a, b, 3, padding=1), norm(b), nn.ReLU(),
            conv(b, c, 3, padding=1), norm(c), nn.ReLU(), pool(2),
            conv(c, d, 3, padding=1), norm(d), nn.ReLU()]


def cnn(widths) -> nn.Sequential:
    return nn.Sequential(*conv_blocks(widths, 2, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


@torch.inference_mode()
def evaluate(ex: SparseExecutor, x: torch.Tensor, y: torch.Tensor, net: PrunableNetwork):
    correct, flops, flops_np, kept_sum = 0, [], [], 0
    for lo in range(0, len(x), 128):
        res = ex(x[lo:lo + 128])
        correct += int((res.logits.argmax(1) == y[lo:lo + 128]).sum())
        kept = res.kept.numpy()
        kept_sum = kept_sum + kept.sum(0)
        flops += net.flops.count(kept, predictors=True)
        flops_np += net.flops.count(kept)
    return correct / len(x), float(np.mean(flops)), float(np.mean(flops_np)), kept_sum / len(x)


def interleaved(fns: dict, inputs: list, reps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and thread-CPU seconds per call of each fn, alternating fns per input."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():            # warm-up
            for inp in inputs[:5]:
                f(inp)
        for _ in range(reps):
            for inp in inputs:
                for k, f in fns.items():
                    c0, t0 = time.thread_time(), time.perf_counter()
                    f(inp)
                    wall[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.thread_time() - c0)
    med = statistics.median
    return {k: med(v) for k, v in wall.items()}, {k: med(v) for k, v in cpu.items()}


def main() -> None:
    args = parse_args("pruning", __doc__.splitlines()[0],
                      lambda p: p.add_argument("--size", type=int, default=None,
                                               help="input side in pixels (default 32; quick 16)"))
    quick = args.quick
    size = args.size or (16 if quick else 32)
    widths = (16, 32, 64, 64) if quick else (32, 64, 128, 128)
    dense_epochs, mask_epochs = (4, 2) if quick else (6, 4)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits(size, args.seed)
    if quick:
        xtr, ytr, xte, yte = xtr[:400], ytr[:400], xte[:200], yte[:200]

    t0 = time.perf_counter()
    model = cnn(widths)
    train_classifier(model, xtr, ytr, epochs=dense_epochs, lr=2e-3, batch_size=32, seed=args.seed)
    base = PrunableNetwork(model, (1, size, size), init_bias=1.0, seed=args.seed).eval()
    dense_acc, dense_flops, _, _ = evaluate(SparseExecutor(base, "dense"), xte, yte, base)
    dense_flops = base.flops.dense()
    print(f"dense: accuracy {dense_acc:.4f}, {dense_flops} MACs, trained in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)

    ratios = RATIOS if quick else EXTRA_RATIOS + RATIOS
    compiled = None if quick else compile_dense(model, xte[:1])
    results, nets = sweep(base, model, dense_acc, xtr, ytr, xte, yte, ratios, mask_epochs, args.seed, quick,
                          compiled=compiled)

    ok, chosen = choose(results)
    lfl = "speedup_b1_like_for_like"
    online = replay(nets[chosen], chosen, xte, args.seed)
    pick = results[str(chosen)]
    figures = {
        "data": f"sklearn digits upsampled to {size}x{size}", "widths": list(widths),
        "train_size": len(xtr), "test_size": len(xte), "dense_accuracy": dense_acc,
        "dense_flops": dense_flops, "per_r": results, "chosen_r": chosen,
        "target": "≥ 50 % fewer FLOPs, ≤ 1 point accuracy drop, ≥ 1.5× batch-1 CPU speedup "
                  "like for like (vs the dense network on the same fast path)",
        "target_met": bool(ok) and pick[lfl] >= 1.5,
        "flops_reduction": pick["flops_reduction"], "accuracy_drop": pick["accuracy_drop"],
        "speedup_b1": pick["speedup_b1"], "speedup_b1_like_for_like": pick[lfl],
        "speedup_b64": pick["speedup_b64"], "speedup_b64_like_for_like": pick["speedup_b64_like_for_like"],
        "speedup_b1_vs_compiled_dense": pick.get("speedup_b1_vs_compiled_dense"),
        "online": online, "mnist1d": mnist1d_section(args.seed, quick),
        "threads": torch.get_num_threads(),
    }
    plot(results, dense_acc, quick)
    finish("pruning", figures, quick=quick)


def sweep(base: PrunableNetwork, stock: nn.Module, dense_acc: float, xtr, ytr, xte, yte, ratios, mask_epochs: int,
          seed: int, quick: bool, lift=None, compiled=None) -> tuple[dict, dict]:
    """Train masks at each r; accuracy, FLOPs and interleaved timings against ``base``.

    ``dense_acc`` is ``base``'s test accuracy with every filter kept (the caller's
    measurement, the baseline of ``accuracy_drop``). ``stock`` is the user's dense model,
    timed on the test inputs as they are; the
    executors get ``lift(x)`` (the 2-D view of a 1-D signal) when ``lift`` is given;
    ``compiled`` (``torch.compile`` of the stock model), when given, is timed alongside.
    """
    dense_flops = base.flops.dense()
    b1_inputs = [xte[i:i + 1] for i in range(60 if quick else 150)]
    b64_inputs = [xte[i:i + 64] for i in range(0, 128, 64)]
    results, nets = {}, {}
    for r in ratios:
        t1 = time.perf_counter()
        net = copy.deepcopy(base)
        log = fit_masks(net, xtr, ytr, r=r, epochs=mask_epochs, seed=seed)
        net.eval()
        nets[r] = net
        sparse = SparseExecutor(net, "union")
        acc, flops, flops_np, kept = evaluate(sparse, xte if lift is None else lift(xte), yte, net)
        fast_dense = SparseExecutor(net, "dense")   # same fast path, every filter: like for like
        b1, b1_cpu = time_against_stock(stock, {"fast_dense": fast_dense, "sparse": sparse}, lift,
                                        b1_inputs, reps=2 if quick else 8,
                                        extra=None if compiled is None else {"compiled_dense": compiled})
        b64, _ = time_against_stock(stock, {"fast_dense": fast_dense, "union": sparse,
                                            "grouped": SparseExecutor(net, "grouped"),
                                            "loop": SparseExecutor(net, "loop")}, lift,
                                    b64_inputs, reps=2 if quick else 10)
        best64 = min(("union", "grouped", "loop"), key=b64.get)
        results[str(r)] = {
            "accuracy": acc, "accuracy_drop": 100 * (dense_acc - acc),
            "flops": flops, "flops_reduction": 1 - flops / dense_flops,
            "flops_reduction_without_predictors": 1 - flops_np / dense_flops,
            "speedup_b1": b1["stock_dense"] / b1["sparse"],
            "speedup_b1_like_for_like": b1["fast_dense"] / b1["sparse"],
            "cpu_speedup_b1_like_for_like": b1_cpu["fast_dense"] / b1_cpu["sparse"],
            "speedup_b1_fast_path_alone": b1["stock_dense"] / b1["fast_dense"],
            **({"speedup_b1_vs_compiled_dense": b1["compiled_dense"] / b1["sparse"]} if compiled is not None else {}),
            "ms_b1": {k: 1e3 * v for k, v in b1.items()},
            "speedup_b64": b64["stock_dense"] / b64[best64],
            "speedup_b64_like_for_like": b64["fast_dense"] / b64[best64], "best_b64_mode": best64,
            "ms_b64": {k: 1e3 * v for k, v in b64.items()},
            "kept_per_layer": [round(float(k), 1) for k in kept],
            "target_kept": log[-1]["target_kept"], "train_s": time.perf_counter() - t1,
        }
        print(f"r={r}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[str(r)].items()
                                     if isinstance(v, float)), file=sys.stderr)
    return results, nets


def compile_dense(model: nn.Module, x: torch.Tensor):
    """``torch.compile`` (inductor, default settings) of the stock dense model, for
    reference, or ``None`` where it is unavailable (it needs a C++ compiler at run time)."""
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(model).eval())
        with torch.inference_mode():
            compiled(x)
        print(f"torch.compile of the dense model: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return compiled
    except Exception as exc:  # noqa: BLE001 - any failure only drops the reference timing
        print(f"torch.compile unavailable ({type(exc).__name__}: {exc}); no compiled reference",
              file=sys.stderr)
        return None


def time_against_stock(stock: nn.Module, executors: dict[str, SparseExecutor], lift, inputs: list,
                       reps: int, extra: dict | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`interleaved` timings of ``stock`` (as ``"stock_dense"``, on the inputs as
    they are), the executors (on ``lift(x)`` when ``lift`` is given: the 2-D view of a
    1-D signal, taken inside the timed call) and ``extra`` callables, in that order."""
    def on_lifted(ex: SparseExecutor):
        return ex if lift is None else (lambda x: ex(lift(x)))

    fns = {"stock_dense": stock, **{k: on_lifted(ex) for k, ex in executors.items()}, **(extra or {})}
    return interleaved(fns, inputs, reps)


def choose(results: dict) -> tuple[list, float]:
    """The r values meeting ≥ 50 % fewer FLOPs within 1 point, and the fastest of them
    like for like (against the dense network on the same fast path)."""
    ok = [float(r) for r, v in results.items() if v["flops_reduction"] >= 0.5 and v["accuracy_drop"] <= 1.0]
    if not ok:
        return ok, min(float(r) for r in results)
    return ok, max(ok, key=lambda r: results[str(r)]["speedup_b1_like_for_like"])


def mnist1d_cnn(widths) -> nn.Sequential:
    # length 40, pooled twice: 10 positions per channel into the head
    return nn.Sequential(*conv_blocks(widths, 1, 5), nn.Flatten(), nn.Linear(widths[-1] * 10, 10))


def mnist1d_section(seed: int, quick: bool) -> dict:
    """The same sweep on MNIST-1D (length-40 signals, generated locally) with a Conv1d CNN,
    run as its exact 2-D equivalent (:func:`operators.pruning.conv1d.as_conv2d`)."""
    from mnist1d.data import get_dataset_args, make_dataset

    t0 = time.perf_counter()
    d = make_dataset(get_dataset_args())
    xtr = torch.tensor(d["x"], dtype=torch.float32)[:, None]
    xte = torch.tensor(d["x_test"], dtype=torch.float32)[:, None]
    ytr, yte = torch.tensor(d["y"]), torch.tensor(d["y_test"])
    if quick:
        xtr, ytr, xte, yte = xtr[:800], ytr[:800], xte[:200], yte[:200]
    widths = (16, 32, 64, 64) if quick else (32, 64, 128, 128)
    torch.manual_seed(seed)
    model = mnist1d_cnn(widths)
    train_classifier(model, xtr, ytr, epochs=4 if quick else MNIST1D_EPOCHS, lr=2e-3, batch_size=32, seed=seed)
    base = PrunableNetwork(as_conv2d(model), (1, 1, xtr.shape[-1]), init_bias=1.0, seed=seed).eval()
    lift = lambda x: x.unsqueeze(2)  # noqa: E731  [N, C, L] -> [N, C, 1, L]
    dense_acc = evaluate(SparseExecutor(base, "dense"), lift(xte), yte, base)[0]
    print(f"mnist1d dense: accuracy {dense_acc:.4f}, {base.flops.dense()} MACs, trained in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results, _ = sweep(base, model, dense_acc, lift(xtr), ytr, xte, yte, MNIST1D_RATIOS, 2 if quick else 4,
                       seed, quick, lift)
    ok, chosen = choose(results)
    return {"data": "MNIST-1D (mnist1d package, generated), length 40", "widths": list(widths),
            "model": "Conv1d CNN run as its Conv2d (1 × k) equivalent", "train_size": len(xtr),
            "test_size": len(xte), "dense_accuracy": dense_acc, "dense_flops": base.flops.dense(),
            "per_r": results, "chosen_r": chosen, "meets_flops_and_accuracy": bool(ok)}


def replay(net: PrunableNetwork, r: float, x: torch.Tensor, seed: int) -> dict:
    """Stream the test images through the operator in micro-batches of 32."""
    op = DynamicPruning(net, r=r, shadow_fraction=0.1, seed=seed, device="cpu")
    images = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x[:, 0].numpy()))
    data = Batch(pa.record_batch({"image": images}))
    t0 = time.perf_counter()
    flops = []
    for lo in range(0, data.num_rows, 32):
        flops.append(op(data.slice(lo, 32)).numpy("flops"))
    secs = time.perf_counter() - t0
    return {"events": op.stats["events"], "events_per_s": op.stats["events"] / secs,
            "shadow_events": op.stats["shadow_events"], "miss_rate": op.miss_rate,
            "mean_flops": float(np.concatenate(flops).mean())}


def plot(results: dict, dense_acc: float, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [float(r) for r in results]
    red = [100 * results[r]["flops_reduction"] for r in results]
    acc = [100 * results[r]["accuracy"] for r in results]
    sp1 = [results[r]["speedup_b1"] for r in results]
    lfl = [results[r]["speedup_b1_like_for_like"] for r in results]
    sp64 = [results[r]["speedup_b64"] for r in results]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(red, acc, "o-", label="dynamic pruning")
    for r, xr, ya in zip(rs, red, acc, strict=True):
        a1.annotate(f"r={r:g}", (xr, ya), textcoords="offset points", xytext=(4, 4), fontsize=8)
    a1.axhline(100 * dense_acc, color="gray", ls="--", label="dense")
    a1.axhline(100 * dense_acc - 1, color="gray", ls=":", label="dense − 1 point")
    a1.axvline(50, color="red", ls=":", lw=0.8)
    a1.set_xlabel("FLOPs reduction (%)")
    a1.set_ylabel("test accuracy (%)")
    a1.legend(fontsize=8)
    a2.plot(rs, sp1, "o-", label="batch 1, vs stock nn.Sequential")
    a2.plot(rs, lfl, "^-", label="batch 1, like for like (dense on the same fast path)")
    a2.plot(rs, sp64, "s-", label="batch 64 (best strategy), vs stock")
    a2.axhline(1.0, color="gray", ls="--")
    a2.axhline(1.5, color="red", ls=":", lw=0.8)
    a2.set_xlabel("r (heatmap mass)")
    a2.set_ylabel("wall-clock speedup vs dense (CPU, 1 thread)")
    a2.legend(fontsize=8)
    fig.suptitle("Fire Together Wire Together on digits: accuracy, FLOPs, measured speed")
    fig.tight_layout()
    os.makedirs(RESULTS, exist_ok=True)
    fig.savefig(os.path.join(RESULTS, f"pruning{'-quick' if quick else ''}.png"), dpi=110)


if __name__ == "__main__":
    main()
