"""Dead-letter records are strict JSON (no bare NaN or Infinity) for operator and source rejects."""

import json
import math

import numpy as np
import pyarrow as pa
from streams import ListSink, ListSource
from test_engine_batch_operator import Cumsum

from stream import BadEventError, run
from stream.dead_letter import DeadLetter, strict_json


def strict(text: str):
    """json.loads that refuses the non-standard constants NaN, Infinity and -Infinity."""
    def refuse(name):
        raise AssertionError(f"not strict JSON: {name} in {text}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_named_strings_anywhere_in_a_record():
    value = {"a": math.nan, "b": [math.inf, {"c": -math.inf}], "d": 1.5, "e": None, "f": "NaN"}
    assert strict(strict_json(value)) == {"a": "NaN", "b": ["Infinity", {"c": "-Infinity"}], "d": 1.5,
                                          "e": None, "f": "NaN"}
    assert strict_json({"t": b"\x00"}) == '{"t": "b\'\\\\x00\'"}'  # no JSON type: its str()


def test_rows_an_operator_rejects_are_strict_json():
    rb = pa.record_batch({"key": ["a", "a", "b", "b"], "ts": [1, 2, 3, 1], "x": [1.0, np.nan, 2.0, np.inf]})
    dead = ListSink()
    run(ListSource([rb], name="e.csv"), Cumsum(), ListSink(), dead_letter=dead)
    records = [strict(r) for r in dead.table().column("record").to_pylist()]
    assert {"key": "b", "ts": 1, "x": "Infinity"} in records and {"key": "a", "ts": 2, "x": "NaN"} in records


def test_a_source_row_is_its_raw_text_as_a_json_string():
    sink = ListSink()
    dead = DeadLetter(sink)
    dead.source_row(BadEventError("line 3: bad", source="in.csv", offset=1, record='a,"1,\\xff'))
    row = sink.table().to_pylist()[0]
    assert row == {"source": "in.csv", "offset": 1, "key": "", "reason": "line 3: bad",
                   "record": json.dumps('a,"1,\\xff')}
    assert strict(row["record"]) == 'a,"1,\\xff' and dead.count == 1
