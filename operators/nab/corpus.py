"""NAB files: the corpus, its labels, and detector result folders.

Layout of a NAB folder (``--nab-dir``)::

    data/<category>/<file>.csv                 timestamp,value
    labels/combined_windows.json               {"<category>/<file>.csv": [[start, end], ...]}
    config/profiles.json                       the three cost matrices (optional here)

and of a detector's results (what NAB's runner writes and scores)::

    <results>/<detector>/<category>/<detector>_<file>.csv
        timestamp,value,anomaly_score,label    (label = 1 inside an anomaly window)

CSV files are read with pyarrow's parser, not row by row.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from operators.nab.corpus import write_result, read_results
    >>> root = tempfile.mkdtemp()
    >>> ts = np.arange(3).astype("datetime64[m]")
    >>> path = write_result(os.path.join(root, "d"), "d", "cat/f.csv", ts, np.ones(3),
    ...                     np.zeros(3), np.array([0, 1, 0]))
    >>> os.path.relpath(path, root)
    'd/cat/d_f.csv'
    >>> open(path).readline().strip()
    'timestamp,value,anomaly_score,label'
    >>> {k: v[1].tolist() for k, v in read_results(os.path.join(root, "d")).items()}
    {'cat/f.csv': [0.0, 0.0, 0.0]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from stream.errors import HebbstreamError

from .scorer import window_bounds

WINDOWS_FILE = os.path.join("labels", "combined_windows.json")
PROFILES_FILE = os.path.join("config", "profiles.json")
DATA_DIR = "data"
RESULT_COLUMNS = ("timestamp", "value", "anomaly_score", "label")
#: the corpus that ships with the repository (NAB v1.1, MIT licence): data, labels, config
#: and NuPIC's published result files; absent from an installed wheel
BUNDLED_CORPUS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                               "examples", "data", "nab"))


class NABFormatError(HebbstreamError, ValueError):
    """A NAB file or folder that is missing or not in NAB's format."""


# -- reading ---------------------------------------------------------------------------
def read_csv_columns(path: str, columns: Sequence[str],
                     types: Mapping[str, pa.DataType] | None = None) -> dict[str, np.ndarray]:
    """Read ``columns`` of a CSV file as NumPy arrays (timestamps as ``datetime64[ns]``).

    Errors name the file and the column (and the row, for an unparsable value).
    """
    types = dict(types or {})
    types.setdefault("timestamp", pa.timestamp("ns"))
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: t for c, t in types.items() if c in columns},
            include_columns=list(columns)))
    except FileNotFoundError as exc:
        raise NABFormatError(f"{path}: no such file") from exc
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        raise NABFormatError(f"{path}: cannot read columns {list(columns)}: {exc}") from exc
    out = {}
    for name in columns:
        col = table.column(name)
        if col.null_count:
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise NABFormatError(f"{path}: column {name!r} is empty at row {i + 1}")
        out[name] = col.to_numpy()
    return out


def read_windows(nab_dir: str) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """The labelled anomaly windows, ``{"<category>/<file>.csv": [(start, end), ...]}``."""
    path = os.path.join(nab_dir, WINDOWS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError as exc:
        raise NABFormatError(f"{path}: no such file; --nab-dir must be a NAB checkout "
                             "(data/, labels/combined_windows.json)") from exc
    except json.JSONDecodeError as exc:
        raise NABFormatError(f"{path}: not valid JSON: {exc}") from exc
    out = {}
    for name, wins in raw.items():
        try:
            out[name] = [(np.datetime64(a, "ns"), np.datetime64(b, "ns")) for a, b in wins]
        except (TypeError, ValueError) as exc:
            raise NABFormatError(f"{path}: {name}: windows must be [start, end] timestamp pairs: "
                                 f"{exc}") from exc
    return out


def corpus_files(nab_dir: str) -> list[str]:
    """Relative names (``category/file.csv``) of the corpus files, sorted."""
    data = os.path.join(nab_dir, DATA_DIR)
    if not os.path.isdir(data):
        raise NABFormatError(f"{data}: no such folder; --nab-dir must be a NAB checkout")
    names = []
    for category in sorted(os.listdir(data)):
        folder = os.path.join(data, category)
        if os.path.isdir(folder):
            names += [f"{category}/{f}" for f in sorted(os.listdir(folder)) if f.endswith(".csv")]
    if not names:
        raise NABFormatError(f"{data}: no <category>/<file>.csv files")
    return names


def read_corpus_file(nab_dir: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps, values)`` of one corpus file."""
    path = os.path.join(nab_dir, DATA_DIR, *name.split("/"))
    cols = read_csv_columns(path, ("timestamp", "value"), {"value": pa.float64()})
    return cols["timestamp"], cols["value"]


def corpus_row_count(nab_dir: str, name: str) -> int | None:
    """Rows of a corpus file (header excluded), or ``None`` when the file is not there."""
    path = os.path.join(nab_dir, DATA_DIR, *name.split("/"))
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        text = f.read()
    return text.count(b"\n") + (0 if text.endswith(b"\n") else 1) - 1


def window_labels(name: str, timestamps: np.ndarray, windows: Sequence[tuple]) -> np.ndarray:
    """NAB's ``label`` column: 1 for rows inside an anomaly window, else 0."""
    label = np.zeros(len(timestamps), dtype=np.int64)
    for w in window_bounds(name, timestamps, windows):
        label[w.first:w.last + 1] = 1
    return label


def result_path(detector_dir: str, detector: str, name: str) -> str:
    """Where NAB keeps ``detector``'s result for corpus file ``name``."""
    category, file = name.split("/", 1)
    return os.path.join(detector_dir, category, f"{detector}_{file}")


def find_detector_dirs(results_dir: str) -> dict[str, str]:
    """``{detector: folder}`` for a detector folder or a folder of detector folders.

    A detector folder holds ``<category>/<detector>_<file>.csv``.
    """
    if not os.path.isdir(results_dir):
        raise NABFormatError(f"{results_dir}: no such folder")

    def is_detector_dir(folder: str) -> bool:
        det = os.path.basename(os.path.normpath(folder))
        for sub in os.listdir(folder):
            path = os.path.join(folder, sub)
            if os.path.isdir(path) and any(f.startswith(det + "_") and f.endswith(".csv")
                                           for f in os.listdir(path)):
                return True
        return False

    if is_detector_dir(results_dir):
        return {os.path.basename(os.path.normpath(results_dir)): results_dir}
    subs = [os.path.join(results_dir, d) for d in sorted(os.listdir(results_dir))]
    found = {os.path.basename(d): d for d in subs if os.path.isdir(d) and is_detector_dir(d)}
    if not found:
        raise NABFormatError(f"{results_dir}: neither a detector folder "
                             "(<category>/<detector>_<file>.csv) nor a folder of them")
    return found


def read_results(detector_dir: str, names: Iterable[str] | None = None,
                 detector: str | None = None, column: str = "anomaly_score",
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"<category>/<file>.csv": (timestamps, scores)}`` of a detector folder.

    With ``names``, exactly those files are read (a missing one is an error);
    otherwise every ``<category>/<detector>_*.csv`` found. ``column`` picks the score
    column (``raw_score`` scores NuPIC's raw HTM score instead of its likelihood).
    """
    detector = detector or os.path.basename(os.path.normpath(detector_dir))
    if names is None:
        names = []
        for category in sorted(os.listdir(detector_dir)):
            folder = os.path.join(detector_dir, category)
            if os.path.isdir(folder):
                names += [f"{category}/{f[len(detector) + 1:]}" for f in sorted(os.listdir(folder))
                          if f.startswith(detector + "_") and f.endswith(".csv")]
    out = {}
    missing = []
    for name in names:
        path = result_path(detector_dir, detector, name)
        if not os.path.exists(path):
            missing.append(path)
            continue
        cols = read_csv_columns(path, ("timestamp", column), {column: pa.float64()})
        out[name] = (cols["timestamp"], cols[column])
    if missing:
        raise NABFormatError(f"{detector_dir}: {len(missing)} result file(s) missing, "
                             f"e.g. {missing[0]}")
    return out


# -- writing ---------------------------------------------------------------------------
def write_result(detector_dir: str, detector: str, name: str, timestamps: np.ndarray,
                 values: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 extra: Mapping[str, np.ndarray] | None = None) -> str:
    """Write one NAB result file (columns timestamp, value, anomaly_score, label, extras)."""
    path = result_path(detector_dir, detector, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stamps = np.datetime_as_string(np.asarray(timestamps).astype("datetime64[s]"), unit="s")
    columns = {
        "timestamp": pa.array(np.char.replace(stamps, "T", " ")),
        "value": pa.array(np.asarray(values, dtype=np.float64)),
        "anomaly_score": pa.array(np.asarray(scores, dtype=np.float64)),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
    }
    for key, arr in (extra or {}).items():
        columns[key] = pa.array(np.asarray(arr))
    tmp = path + ".tmp"
    pacsv.write_csv(pa.table(columns), tmp, write_options=pacsv.WriteOptions(
        quoting_style="none", quoting_header="none"))
    os.replace(tmp, path)
    return path
