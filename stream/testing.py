"""The shared operator contract check, like River's ``check_estimator``.

Every operator in the repository goes through :func:`check_operator`:

- **state round-trip**: run half the stream, checkpoint the state through the real
  (pickle-free) codec, load it into a fresh operator, run the rest: outputs equal an
  uninterrupted run's.
- **batch-size equivalence**: cutting the stream into batches of 1, 7 or all rows gives
  the same outputs (skipped for operators whose algorithm depends on the batch, which
  set ``batch_size_dependent = True``; they get the check at their own batch size).
- **seeded determinism**: two operators built alike give identical outputs.
- **bad input**: a missing required column raises :class:`SchemaError`; a NaN in a
  required floating-point column raises :class:`BadEventError` naming the row.

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from stream import Batch, Operator
    >>> from stream.testing import check_operator
    >>> class RunningMean(Operator):
    ...     requires = {"x": "number"}
    ...     def __init__(self):
    ...         self.n, self.mean = 0, 0.0
    ...     def process(self, batch):
    ...         out = []
    ...         for x in batch.numpy("x"):
    ...             out.append(self.mean)          # predict, then learn
    ...             self.n += 1
    ...             self.mean += (x - self.mean) / self.n
    ...         return batch.with_columns({"mean": np.array(out)})
    ...     def state_dict(self):
    ...         return {"n": self.n, "mean": self.mean}
    ...     def load_state_dict(self, s):
    ...         self.n, self.mean = s["n"], s["mean"]
    >>> data = Batch(pa.record_batch({"x": np.arange(20, dtype=float)}))
    >>> check_operator(RunningMean, data)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from . import state as state_codec
from .batch import Batch
from .errors import BadEventError, SchemaError
from .operator import Operator


def _run(op: Operator, data: Batch, size: int) -> Batch:
    outs = [op(data.slice(lo, min(size, data.num_rows - lo))) for lo in range(0, data.num_rows, size)]
    return Batch.concat(outs)


def assert_same_outputs(a: Batch, b: Batch, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Assert two output batches hold the same columns and values (NaN equal to NaN)."""
    assert a.column_names == b.column_names, f"{what}: columns {a.column_names} != {b.column_names}"
    assert a.num_rows == b.num_rows, f"{what}: {a.num_rows} rows != {b.num_rows}"
    for name in a.column_names:
        x, y = a.numpy(name), b.numpy(name)
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=rtol, atol=atol,
                                       equal_nan=True, err_msg=f"{what}: column {name!r}")
        else:
            assert np.array_equal(x, y), f"{what}: column {name!r} differs"


def check_operator(factory: Callable[[], Operator], data: Batch, *, batch_size: int | None = None,
                   sizes: Sequence[int] = (1, 7), rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Run the contract checks on operators built by ``factory`` over the rows of ``data``.

    Args:
        factory: builds a fresh operator (same seed every time).
        data: a stream of a few dozen rows, as one batch.
        batch_size: the batch size to run at when the operator is batch-size dependent.
        sizes: the batch sizes compared with one whole-stream batch.
    """
    probe = factory()
    dependent = getattr(probe, "batch_size_dependent", False)
    if dependent and batch_size is None:
        raise ValueError("a batch-size dependent operator needs check_operator(..., batch_size=N)")
    base_size = batch_size or data.num_rows
    reference = _run(probe, data, base_size)

    # seeded determinism
    assert_same_outputs(reference, _run(factory(), data, base_size), "seeded determinism", rtol, atol)

    # batch-size equivalence
    if not dependent:
        for size in sizes:
            assert_same_outputs(reference, _run(factory(), data, size), f"batch size {size}", rtol, atol)

    # state round-trip through the checkpoint codec, split at a batch boundary
    split = (data.num_rows // 2) // base_size * base_size if dependent else data.num_rows // 2
    split = split or min(base_size, data.num_rows)
    first = factory()
    head = _run(first, data.slice(0, split), base_size)
    tree, blob = state_codec.dumps(first.state_dict())
    second = factory()
    second.load_state_dict(state_codec.loads(tree, blob))
    if split < data.num_rows:
        tail = _run(second, data.slice(split), base_size)
        resumed = Batch.concat([head, tail])
    else:
        resumed = head
    assert_same_outputs(reference, resumed, "state round-trip", rtol, atol)

    # bad input
    required = probe.required_columns()
    for col in required:
        if col in data:
            idx = data.schema.get_field_index(col)
            missing = Batch(data.data.remove_column(idx), source="contract-check")
            try:
                factory()(missing)
            except SchemaError as exc:
                assert col in str(exc), f"SchemaError for a missing {col!r} does not name it: {exc}"
            else:
                raise AssertionError(f"a stream without column {col!r} was accepted")
    for col in required:
        if col in data and pa.types.is_floating(data.schema.field(col).type):
            values = data.numpy(col).astype(float).copy()
            values[min(3, data.num_rows - 1)] = np.nan
            bad = data.with_columns({col: values})
            bad = Batch(bad.data, source="contract-check", offset=100)
            try:
                factory()(bad)
            except BadEventError as exc:
                assert "contract-check" in str(exc) and f"row {100 + min(3, data.num_rows - 1)}" in str(exc), \
                    f"BadEventError does not name the source and row: {exc}"
            else:
                raise AssertionError(f"a NaN in column {col!r} was accepted")
