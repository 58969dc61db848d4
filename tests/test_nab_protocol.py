"""The tuning / held-out protocol: fixed halves of the corpus, thresholds chosen on one half only."""

from __future__ import annotations

import os

from operators.nab.corpus import corpus_files
from operators.nab.protocol import held_out_half, protocol_scores, tuning_half
from operators.nab.runner import score_results

CORPUS = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "nab")


def test_halves_split_every_category_and_cover_the_corpus():
    files = corpus_files(CORPUS)
    tune, held = tuning_half(files), held_out_half(files)
    assert not set(tune) & set(held) and sorted(tune + held) == sorted(files)
    assert (len(files), len(tune)) == (58, 31)
    for category in {f.split("/")[0] for f in files}:
        mine = sorted(f for f in files if f.startswith(category + "/"))
        assert [f for f in tune if f in mine] == mine[::2]   # the 1st, 3rd, ... of each category


def test_held_out_is_scored_at_the_tuning_thresholds():
    files = corpus_files(CORPUS)
    folder = os.path.join(CORPUS, "results", "numenta")
    scores = protocol_scores(folder, CORPUS, files)
    swept_held = score_results(folder, CORPUS, files=held_out_half(files))
    for profile, held in scores["held_out"].items():
        # thresholds chosen elsewhere can only do as well as a sweep on the held-out half itself
        assert held <= swept_held[profile].normalised + 1e-9
    tuned = score_results(folder, CORPUS, files=tuning_half(files))
    assert scores["thresholds"]["tuning"] == {p: r.threshold for p, r in tuned.items()}
