"""The Numenta Anomaly Benchmark: run any streaming detector over its corpus and score it.

Modules: :mod:`.corpus` (NAB's files: data, labels, result folders), :mod:`.scorer`
(NAB's scoring rules: windows, profiles, threshold sweep), :mod:`.replay` (the corpus as
one keyed stream through the engine, in this process), :mod:`.workers` (the same over
worker processes), :mod:`.runner` (run and score), :mod:`.detectors` (detectors by
name), :mod:`.cli` (``hebbstream nab``) and :mod:`.demo` (``hebbstream demo``: HTM on one
bundled stream, through the CSV source).

Example:
    >>> from operators.nab import NABStream, nab_factory
    >>> nab_factory("htm").func.__name__
    'htm_factory'
"""

from .detectors import nab_factory
from .replay import NABStream
from .runner import run_corpus, score_results

__all__ = ["NABStream", "nab_factory", "run_corpus", "score_results"]
