"""The NAB scorer: hand-made windows, an independent loop implementation, NuPIC's numbers."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

from operators.nab.corpus import read_results, read_windows
from operators.nab.runner import read_nab_thresholds, scoring_table
from operators.nab.scorer import (
    LOW_FN,
    LOW_FP,
    PROFILES,
    STANDARD,
    Profile,
    ScoringTable,
    evaluate,
    probation_length,
    scaled_sigmoid,
)

HERE = os.path.dirname(__file__)
EXCERPT = os.path.join(HERE, "data", "nab")
CORPUS = os.path.normpath(os.path.join(HERE, "..", "examples", "data", "nab"))

N = 100   # rows of the hand-made file: probation = 15 rows
TS = np.arange(N).astype("datetime64[m]")
S_LEFT = float(scaled_sigmoid(-1.0))


def table(scores: dict[int, float], windows=((50, 59),), n: int = N) -> ScoringTable:
    """One file of ``n`` rows with anomaly scores at the given rows, 0 elsewhere."""
    ts = np.arange(n).astype("datetime64[m]")
    sc = np.zeros(n)
    for i, v in scores.items():
        sc[i] = v
    return ScoringTable.build({"f.csv": (ts, sc)}, {"f.csv": [(ts[a], ts[b]) for a, b in windows]})


def raw(t: ScoringTable, profile: Profile = STANDARD, threshold: float = 0.5) -> float:
    return t.score_at(profile, threshold).score


# -- hand-made windows -------------------------------------------------------------------
def test_probation_length_follows_nab():
    assert probation_length(100) == 15
    assert probation_length(4032) == 604
    assert probation_length(5000) == 750
    assert probation_length(22695) == 750


def test_detection_at_left_edge_earns_exactly_tp_weight():
    for profile in PROFILES.values():
        assert raw(table({50: 1.0}), profile) == pytest.approx(profile.tp, abs=1e-12)


def test_only_the_earliest_detection_in_a_window_counts():
    expected = float(scaled_sigmoid(-(59 - 52 + 1) / 10)) / S_LEFT
    assert raw(table({52: 1.0, 55: 1.0, 58: 1.0})) == pytest.approx(expected, abs=1e-12)
    # a detection at the right edge is worth S(-1/10)/S(-1), more than nothing
    assert 0 < raw(table({59: 1.0})) < raw(table({55: 1.0})) < raw(table({50: 1.0}))


def test_missed_window_costs_fn_weight():
    two = ((30, 39), (60, 69))
    for profile in PROFILES.values():
        assert raw(table({}, two), profile) == pytest.approx(-2 * profile.fn)
        assert raw(table({30: 1.0}, two), profile) == pytest.approx(profile.tp - profile.fn)


def test_false_positive_costs():
    # before any window: the full fp weight
    for profile in (STANDARD, LOW_FP):
        assert raw(table({20: 1.0, 50: 1.0}), profile) == pytest.approx(1.0 - profile.fp)
    # after a window: fp weight scaled by the distance to its right edge, in widths - 1
    cost = 0.11 * float(scaled_sigmoid((65 - 59) / (10 - 1)))
    assert raw(table({50: 1.0, 65: 1.0})) == pytest.approx(1.0 + cost)
    assert cost < 0
    # far away (3 widths and more): the full weight again
    assert raw(table({50: 1.0, 95: 1.0})) == pytest.approx(1.0 - 0.11)
    # every flagged row is a separate false positive
    assert raw(table({20: 1.0, 21: 1.0, 22: 1.0, 50: 1.0})) == pytest.approx(1.0 - 3 * 0.11)


def test_probation_rows_are_ignored():
    base = raw(table({50: 1.0}))
    assert raw(table({0: 1.0, 7: 1.0, 14: 1.0, 50: 1.0})) == base
    assert raw(table({15: 1.0, 50: 1.0})) == pytest.approx(base - 0.11)   # row 15 is scored
    counts = table({3: 1.0, 50: 1.0}).score_at(STANDARD, 0.5)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (1, 0, 9, 75)


def test_sweep_picks_best_threshold_and_highest_on_ties():
    # 0.9 at the left edge, 0.7 a false positive, 0.5 later in the window (adds nothing)
    t = table({50: 0.9, 20: 0.7, 55: 0.5})
    thresholds, scores = t.sweep(STANDARD)
    assert thresholds.tolist() == [1.1, 0.9, 0.7, 0.5, 0.0]
    assert scores[:4] == pytest.approx([-1.0, 1.0, 0.89, 0.89])
    best = t.best(STANDARD)
    assert (best.threshold, best.score) == (0.9, pytest.approx(1.0))
    # equal raw scores at 0.7 and 0.5 (nothing changes in between): the higher one wins
    t2 = table({50: 0.9, 55: 0.5, 20: 0.7, 21: 0.7, 22: 0.7, 23: 0.7, 24: 0.7, 25: 0.7,
                26: 0.7, 27: 0.7, 28: 0.7, 29: 0.7})
    assert t2.best(STANDARD).threshold == 0.9
    # rows with equal scores are flagged together
    t3 = table({50: 0.8, 20: 0.8})
    assert t3.sweep(STANDARD)[0].tolist() == [1.1, 0.8, 0.0]
    assert t3.best(STANDARD).score == pytest.approx(1.0 - 0.11)


def test_normalisation_null_and_perfect():
    two = ((30, 39), (60, 69))
    t = table({30: 1.0, 60: 1.0}, two)
    for name, report in evaluate(t).items():
        profile = PROFILES[name]
        assert report.null == pytest.approx(-2 * profile.fn)
        assert report.perfect == pytest.approx(2 * profile.tp)
        assert report.normalised == pytest.approx(100.0)
    nothing = evaluate(table({}, two))
    assert all(r.normalised == pytest.approx(0.0) for r in nothing.values())


def test_repeated_timestamps_locate_windows_like_nab():
    # rows 40..44 repeat the stamps of rows 35..39 (a clock change)
    ts = np.concatenate([np.arange(40), np.arange(35, 95)]).astype("datetime64[m]")
    sc = np.zeros(len(ts))
    sc[50] = 1.0
    # window from stamp 47 (first at row 52) to stamp 55 (row 60): width 9
    t = ScoringTable.build({"f": (ts, sc)}, {"f": [(ts[52], ts[60])]})
    assert raw(t) == pytest.approx(-1.0 - 0.11)   # row 50 lies before the window: a miss + FP
    sc[52] = 1.0
    t = ScoringTable.build({"f": (ts, sc)}, {"f": [(ts[52], ts[60])]})
    assert raw(t) == pytest.approx(1.0 - 0.11)


def test_bad_input_is_named():
    ts = np.arange(10).astype("datetime64[m]")
    with pytest.raises(ValueError, match="f.csv.*no row is stamped"):
        ScoringTable.build({"f.csv": (ts, np.zeros(10))},
                           {"f.csv": [(np.datetime64("2000-01-01"), ts[3])]})
    sc = np.zeros(10)
    sc[4] = np.nan
    with pytest.raises(ValueError, match="f.csv.*anomaly_score.*row 4"):
        ScoringTable.build({"f.csv": (ts, sc)}, {})
    with pytest.raises(ValueError, match="3 anomaly scores"):
        ScoringTable.build({"f.csv": (ts, np.zeros(3))}, {})


# -- against an independent, row-by-row implementation of NAB's sweeper rules ----------------
def loop_score(files: dict, windows: dict, profile: Profile, threshold: float) -> float:
    """NAB's rules written the slow, obvious way (rows with score >= threshold detect)."""
    total = 0.0
    for name, (ts, sc) in files.items():
        ts = list(ts)
        probation = min(math.floor(0.15 * len(ts)), 750)
        pending = list(windows.get(name, []))
        cur = None          # (right index, width, name)
        prev = None         # (right index, width)
        best: dict = {}
        for i, (t, s) in enumerate(zip(ts, sc, strict=True)):
            if pending and t == pending[0][0]:
                start, end = pending.pop(0)
                cur = (ts.index(end), ts.index(end) - ts.index(start) + 1, end)
                if i >= probation:
                    best.setdefault(start, -profile.fn)
                key = start
            if i >= probation and s >= threshold:
                if cur is not None:
                    y = -(cur[0] - i + 1) / cur[1]
                    best[key] = max(best.get(key, -profile.fn),
                                    profile.tp * (2 / (1 + math.exp(5 * y)) - 1) / S_LEFT)
                elif prev is None:
                    total -= profile.fp
                else:
                    y = abs(prev[0] - i) / (prev[1] - 1)
                    total += profile.fp * (-1.0 if y >= 3 else 2 / (1 + math.exp(5 * y)) - 1)
            elif cur is not None and i >= probation:
                best.setdefault(key, -profile.fn)
            if cur is not None and t == cur[2]:
                prev = (cur[0], cur[1])
                cur = None
        total += sum(best.values())
    return total


def random_corpus(seed: int):
    rng = np.random.default_rng(seed)
    files, windows = {}, {}
    for f in range(4):
        n = int(rng.integers(150, 400))
        ts = np.arange(n).astype("datetime64[m]") + np.timedelta64(int(rng.integers(0, 1000)), "m")
        # coarse scores make ties; a few windows per file, none in probation
        sc = np.round(rng.random(n) ** 3, 2)
        cuts = np.sort(rng.choice(np.arange(probation_length(n) + 1, n - 1), 4, replace=False))
        wins = [(ts[cuts[0]], ts[cuts[1]]), (ts[cuts[2]], ts[cuts[3]])][: int(rng.integers(0, 3))]
        files[f"c/f{f}.csv"], windows[f"c/f{f}.csv"] = (ts, sc), wins
    return files, windows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_matches_row_by_row_rules(seed):
    files, windows = random_corpus(seed)
    t = ScoringTable.build(files, windows)
    for profile in (STANDARD, LOW_FP, LOW_FN):
        thresholds, scores = t.sweep(profile)
        for thr, s in zip(thresholds, scores, strict=True):
            expected = loop_score(files, windows, profile, thr)
            assert s == pytest.approx(expected, abs=1e-9), (profile.name, thr)
            assert t.score_at(profile, thr).score == pytest.approx(expected, abs=1e-9)
        assert t.best(profile).score == pytest.approx(max(scores), abs=1e-9)


# -- NuPIC's published per-file numbers ------------------------------------------------------------
def nab_score_table(folder: str) -> dict[tuple[str, str], tuple]:
    """``{(profile, file): (score, tp, tn, fp, fn)}`` from NAB's numenta_*_scores.csv."""
    out = {}
    for profile in PROFILES:
        with open(os.path.join(folder, f"numenta_{profile}_scores.csv")) as f:
            for row in csv.DictReader(f):
                if row["File"]:
                    out[(profile, row["File"])] = (float(row["Score"]), int(row["TP"]),
                                                   int(row["TN"]), int(row["FP"]), int(row["FN"]))
    return out


# NAB's numenta_<profile>_scores.csv rows of the two files of the bundled excerpt
EXCERPT_NAB = {
    ("standard", "realAdExchange/exchange-2_cpc_results.csv"): (0.53195803375, 1, 1215, 3, 162),
    ("standard", "realKnownCause/rogue_agent_key_hold.csv"): (-1.11370102385, 1, 1408, 2, 189),
    ("reward_low_FP_rate", "realAdExchange/exchange-2_cpc_results.csv"): (-1.66, 0, 1215, 3, 163),
    ("reward_low_FP_rate", "realKnownCause/rogue_agent_key_hold.csv"):
        (-1.33370102385, 1, 1408, 2, 189),
    ("reward_low_FN_rate", "realAdExchange/exchange-2_cpc_results.csv"):
        (0.53195803375, 1, 1215, 3, 162),
    ("reward_low_FN_rate", "realKnownCause/rogue_agent_key_hold.csv"):
        (-2.11370102385, 1, 1408, 2, 189),
}


def check_per_file(t: ScoringTable, expected: dict, thresholds: dict) -> None:
    for profile_name, threshold in thresholds.items():
        for f in t.score_files(PROFILES[profile_name], threshold):
            score, tp, tn, fp, fn = expected[(profile_name, f.name)]
            assert f.score == pytest.approx(score, abs=1e-9), (profile_name, f.name)
            assert (f.tp, f.tn, f.fp, f.fn) == (tp, tn, fp, fn), (profile_name, f.name)


def test_excerpt_per_file_scores_match_nab():
    t = scoring_table(os.path.join(EXCERPT, "results", "numenta"), EXCERPT)
    check_per_file(t, EXCERPT_NAB, read_nab_thresholds(EXCERPT)["numenta"])


def test_full_corpus_reproduces_nupic_scores():
    folder = os.path.join(CORPUS, "results", "numenta")
    windows = read_windows(CORPUS)
    t = ScoringTable.build(read_results(folder, sorted(windows)), windows)
    assert len(t.names) == 58 and int(t.file_rows.sum()) == 365558 and t.n_windows.sum() == 116
    stored = read_nab_thresholds(CORPUS)["numenta"]
    reports = evaluate(t, PROFILES, stored)
    assert round(reports["standard"].normalised, 2) == 70.10
    assert round(reports["reward_low_FP_rate"].normalised, 2) == 63.12
    assert round(reports["reward_low_FN_rate"].normalised, 2) == 74.32
    std = reports["standard"].result
    assert (std.tp, std.tn, std.fp, std.fn) == (240, 299194, 153, 33255)   # NAB's Totals row
    check_per_file(t, nab_score_table(folder), stored)
    # the full sweep finds NuPIC's standard and low-FN scores again, at a distinct score value
    swept = evaluate(t)
    assert swept["standard"].raw == pytest.approx(reports["standard"].raw, abs=1e-9)
    assert swept["reward_low_FN_rate"].raw == pytest.approx(reports["reward_low_FN_rate"].raw,
                                                            abs=1e-9)
    assert swept["standard"].threshold == pytest.approx(0.543099145074)
    # NAB's stored low-FP threshold came from an older local search; the sweep does better
    assert swept["reward_low_FP_rate"].raw >= reports["reward_low_FP_rate"].raw
