"""Micro-batches, the operator contract's validation, pipelines and the event-time check."""

import numpy as np
import pyarrow as pa
import pytest

from stream import BadEventError, Batch, Operator, Pipeline, SchemaError
from stream.batch import to_arrow
from stream.checks import EventTimeOrder
from stream.tensors import logical_shape
from stream.testing import check_operator


class Cumsum(Operator):
    """Per-key running sum: output for an event includes only earlier events (prequential)."""

    requires = {"x": "number"}

    def __init__(self):
        self.total = {}

    def process(self, batch):
        out = np.empty(batch.num_rows)
        for i, (k, x) in enumerate(zip(batch.keys(), batch.numpy("x"))):
            out[i] = self.total.get(k, 0.0)
            self.total[k] = out[i] + x
        return batch.with_columns({"before": out})

    def state_dict(self):
        return {"total": dict(self.total)}

    def load_state_dict(self, state):
        self.total = dict(state["total"])


def test_numpy_view_is_zero_copy():
    x = np.arange(10, dtype=np.float64)
    b = Batch(pa.record_batch({"x": x}))
    view = b.numpy("x")
    assert not view.flags.owndata  # a view on Arrow's buffer
    assert view.tolist() == x.tolist()


def test_tensor_column_round_trip():
    images = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    b = Batch(pa.record_batch({"k": [1, 2, 3, 4]})).with_columns({"image": images})
    assert isinstance(b.schema.field("image").type, pa.FixedShapeTensorType)
    np.testing.assert_array_equal(b.numpy("image"), images)
    assert tuple(b.torch("image").shape) == (4, 8, 8)


@pytest.mark.parametrize("view", ["new_axis", "transpose", "nhwc_to_nchw", "fortran"])
def test_tensor_column_of_a_strided_view_keeps_its_logical_shape(view):
    """A view whose strides are not row-major (x[:, None] has a stride-0 axis) is written
    row-major with its own shape and no permutation, and reads back equal."""
    x = np.random.default_rng(1).random((5, 8, 6, 3)).astype(np.float32)
    values = {"new_axis": x[:, :, :, 0][:, None], "transpose": x[:, :, :, 0].transpose(0, 2, 1),
              "nhwc_to_nchw": x.transpose(0, 3, 1, 2), "fortran": np.asfortranarray(x)}[view]
    arr = to_arrow(values)
    assert list(arr.type.shape) == list(values.shape[1:]) and arr.type.permutation is None
    np.testing.assert_array_equal(Batch(pa.record_batch({"t": arr})).numpy("t"), values)


def test_tensor_reader_honours_a_permutation_from_elsewhere():
    """Data written by another producer with a permutation (physical HWC shown as CHW,
    Arrow's canonical definition: logical = physical.transpose(permutation))."""
    phys = np.random.default_rng(2).random((4, 8, 6, 3)).astype(np.float32)     # N, H, W, C
    typ = pa.fixed_shape_tensor(pa.float32(), [8, 6, 3], permutation=[2, 0, 1])
    arr = pa.ExtensionArray.from_storage(typ, pa.FixedSizeListArray.from_arrays(pa.array(phys.ravel()), 144))
    b = Batch(pa.record_batch({"image": arr}))
    assert logical_shape(typ) == (3, 8, 6)
    np.testing.assert_array_equal(b.numpy("image"), phys.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(b.slice(1, 2).numpy("image"), phys[1:3].transpose(0, 3, 1, 2))


def test_tensor_column_of_empty_tensors_is_refused():
    with pytest.raises(ValueError, match="non-empty tensors"):
        to_arrow(np.zeros((3, 0, 2), dtype=np.float32))


def test_filter_and_slice_keep_source_positions():
    b = Batch(pa.record_batch({"x": np.arange(6.0)}), source="f.csv", offset=100)
    f = b.filter([False, True, False, True, True, False])
    assert f.positions().tolist() == [101, 103, 104]
    assert f.slice(1).positions().tolist() == [103, 104]
    assert b.slice(2, 2).positions().tolist() == [102, 103]
    assert Batch.concat([b.slice(0, 2), b.slice(2)]).positions().tolist() == list(range(100, 106))


def test_key_groups_preserve_order():
    b = Batch(pa.record_batch({"key": ["b", "a", "b", "a", "c"]}))
    groups = b.key_groups()
    assert groups["a"].tolist() == [1, 3] and groups["b"].tolist() == [0, 2] and groups["c"].tolist() == [4]


def test_missing_column_names_column_and_source():
    b = Batch(pa.record_batch({"y": [1.0]}), source="data.parquet")
    with pytest.raises(SchemaError, match=r"data.parquet.*Cumsum needs column 'x'"):
        Cumsum()(b)


def test_wrong_type_is_a_schema_error():
    b = Batch(pa.record_batch({"x": ["a", "b"]}), source="s")
    with pytest.raises(SchemaError, match="kind number"):
        Cumsum()(b)


@pytest.mark.parametrize("bad", [np.nan, np.inf, None])
def test_bad_value_names_row_key_and_column(bad):
    b = Batch(pa.record_batch({"key": ["a", "b", "c"], "x": pa.array([1.0, bad, 2.0])}),
              source="m.csv", offset=40)
    with pytest.raises(BadEventError) as err:
        Cumsum()(b)
    msg = str(err.value)
    assert "m.csv" in msg and "row 41" in msg and "'x'" in msg and "key 'b'" in msg


def test_dead_letter_handler_gets_bad_rows_and_run_continues():
    rejected = []
    b = Batch(pa.record_batch({"key": ["a", "a", "a"], "x": [1.0, np.nan, 2.0]}), source="s")
    out = Cumsum()(b, lambda rows, reasons: rejected.append((rows.positions().tolist(), reasons)))
    assert out.numpy("before").tolist() == [0.0, 1.0]
    assert rejected[0][0] == [1] and "not a finite number" in rejected[0][1][0]


def test_pipeline_state_and_timings():
    pipe = Cumsum() | Cumsum()
    assert isinstance(pipe, Pipeline) and len(pipe.operators) == 2
    b = Batch(pa.record_batch({"key": ["a", "a"], "x": [1.0, 2.0]}))
    pipe(b)
    state = pipe.state_dict()
    assert state["0.Cumsum"]["total"] == {"a": 3.0}
    other = Cumsum() | Cumsum()
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(ValueError, match="pipeline has"):
        (Cumsum() | Cumsum() | Cumsum()).load_state_dict(state)
    assert set(pipe.timings) == {"0.Cumsum", "1.Cumsum"}


def test_contract_check_passes_a_correct_operator():
    rng = np.random.default_rng(0)
    data = Batch(pa.record_batch({"key": rng.choice(["a", "b"], 30), "x": rng.normal(size=30)}))
    check_operator(Cumsum, data)


def test_contract_check_catches_lost_state():
    class Forgetful(Cumsum):
        def state_dict(self):
            return {"total": {}}

    data = Batch(pa.record_batch({"key": ["a"] * 20, "x": np.ones(20)}))
    with pytest.raises(AssertionError, match="state round-trip"):
        check_operator(Forgetful, data)


def test_contract_check_catches_batch_size_dependence():
    class PerBatchMean(Operator):
        requires = {"x": "number"}

        def process(self, batch):
            return batch.with_columns({"m": np.full(batch.num_rows, batch.numpy("x").mean())})

    data = Batch(pa.record_batch({"x": np.arange(20.0)}))
    with pytest.raises(AssertionError, match="batch size"):
        check_operator(PerBatchMean, data)


def test_event_time_order_across_batches_and_state():
    op = EventTimeOrder()
    op(Batch(pa.record_batch({"key": ["a", "b"], "ts": [5, 1]})))
    state = op.state_dict()
    fresh = EventTimeOrder()
    fresh.load_state_dict(state)
    with pytest.raises(BadEventError, match=r"goes backwards within key 'a': 4 after 5"):
        fresh(Batch(pa.record_batch({"key": ["b", "a"], "ts": [1, 4]}), source="t.csv"))
