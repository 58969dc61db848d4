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
- **device**: ``to("cpu")`` returns the operator, which then gives the same outputs,
  also when moved in the middle of the stream.
- **close**: ``close()`` releases resources without error, twice in a row too.

Each check is a function of its own (:data:`CHECKS`), so a test suite can give each its
own test id; ``tests/test_operator_contract.py`` runs every check on every registered
operator with the small configurations it declares in ``_unit_test_params()``
(:class:`UnitTest`), the way River's ``check_estimator`` does.

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
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class UnitTest:
    """A small configuration of an operator for the contract checks (``_unit_test_params``).

    Args:
        params: constructor keyword arguments; the operator is ``cls(**params)``.
        data: makes the input, a stream of a few dozen rows as one batch.
        batch_size: the batch size to run at when the operator is batch-size dependent.
        sizes: the batch sizes compared with one whole-stream batch.
        rtol / atol: tolerance of float outputs.
        setup: called on each new operator before it runs (e.g. to add partitions).
    """

    params: dict[str, Any]
    data: Callable[[], Batch]
    batch_size: int | None = None
    sizes: Sequence[int] = (1, 7)
    rtol: float = 1e-6
    atol: float = 1e-9
    setup: Callable[[Operator], None] | None = None

    def factory(self, cls: Callable[..., Operator]) -> Callable[[], Operator]:
        """A function building a fresh operator of this configuration."""
        def build() -> Operator:
            op = cls(**self.params)
            if self.setup is not None:
                self.setup(op)
            return op
        return build


Check = Callable[[Callable[[], Operator], Batch, UnitTest], None]


def _base_size(probe: Operator, data: Batch, case: UnitTest) -> int:
    if probe.batch_size_dependent and case.batch_size is None:
        raise ValueError(f"{probe.name} is batch-size dependent: its UnitTest needs batch_size=N")
    return case.batch_size or data.num_rows


def check_seeded_determinism(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """Two operators built alike give identical outputs."""
    probe = factory()
    size = _base_size(probe, data, case)
    assert_same_outputs(_run(probe, data, size), _run(factory(), data, size), "seeded determinism",
                        case.rtol, case.atol)


def check_batch_size_equivalence(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """Batches of 1, 7 or all rows give the same outputs (batch-size dependent operators:
    nothing to compare)."""
    probe = factory()
    if probe.batch_size_dependent:
        return
    reference = _run(probe, data, data.num_rows)
    for size in case.sizes:
        assert_same_outputs(reference, _run(factory(), data, size), f"batch size {size}", case.rtol, case.atol)


def check_state_round_trip(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """Checkpoint half-way through the real codec, resume in a fresh operator: same outputs."""
    probe = factory()
    base_size = _base_size(probe, data, case)
    reference = _run(probe, data, base_size)
    # split at a batch boundary
    split = (data.num_rows // 2) // base_size * base_size if probe.batch_size_dependent else data.num_rows // 2
    split = split or min(base_size, data.num_rows)
    first = factory()
    head = _run(first, data.slice(0, split), base_size)
    tree, blob = state_codec.dumps(first.state_dict())
    second = factory()
    second.load_state_dict(state_codec.loads(tree, blob))
    resumed = Batch.concat([head, _run(second, data.slice(split), base_size)]) if split < data.num_rows else head
    assert_same_outputs(reference, resumed, "state round-trip", case.rtol, case.atol)


def check_missing_column(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """A stream without a required column raises :class:`SchemaError` naming it."""
    for col in factory().required_columns():
        if col not in data:
            continue
        missing = Batch(data.data.remove_column(data.schema.get_field_index(col)), source="contract-check")
        try:
            factory()(missing)
        except SchemaError as exc:
            assert col in str(exc), f"SchemaError for a missing {col!r} does not name it: {exc}"
        else:
            raise AssertionError(f"a stream without column {col!r} was accepted")


def check_nan_row(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """A NaN in a required float column raises :class:`BadEventError` naming source and row."""
    row = min(3, data.num_rows - 1)
    for col in factory().required_columns():
        if col not in data or not pa.types.is_floating(data.schema.field(col).type):
            continue
        values = data.numpy(col).astype(float).copy()
        values[row] = np.nan
        bad = Batch(data.with_columns({col: values}).data, source="contract-check", offset=100)
        try:
            factory()(bad)
        except BadEventError as exc:
            assert "contract-check" in str(exc) and f"row {100 + row}" in str(exc), \
                f"BadEventError does not name the source and row: {exc}"
        else:
            raise AssertionError(f"a NaN in column {col!r} was accepted")


def check_to_cpu(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """``to("cpu")`` returns the operator; moved in the middle of the stream, it gives the
    outputs of an operator that was not moved."""
    probe = factory()
    size = _base_size(probe, data, case)
    reference = _run(probe, data, size)
    split = max(size, (data.num_rows // 2) // size * size)
    middle = factory()
    head = _run(middle, data.slice(0, split), size)
    assert middle.to("cpu") is middle, f"{middle.name}.to('cpu') does not return the operator"
    outs = Batch.concat([head, _run(middle, data.slice(split), size)]) if split < data.num_rows else head
    assert_same_outputs(reference, outs, "to('cpu') in the middle of the stream", case.rtol, case.atol)


def check_close(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """``close()`` works on a fresh operator and after a run, and a second ``close()`` too."""
    fresh = factory()
    assert fresh.close() is None
    op = factory()
    size = _base_size(op, data, case)
    _run(op, data.slice(0, min(size, data.num_rows)), size)
    op.close()
    op.close()


def check_summary(factory: Callable[[], Operator], data: Batch, case: UnitTest) -> None:
    """``summary()`` is a dict with text keys, which the run summary can write as JSON, fresh and after a run."""
    import json

    op = factory()
    for when in ("fresh", "after a run"):
        if when != "fresh":
            size = _base_size(op, data, case)
            _run(op, data.slice(0, min(size, data.num_rows)), size)
        figures = op.summary()
        assert isinstance(figures, dict) and all(isinstance(k, str) for k in figures), \
            f"{op.name}.summary() {when} is not a dict with text keys: {figures!r}"
        json.dumps(figures, default=str)


#: Every contract check, in the order :func:`check_operator` runs them.
CHECKS: tuple[Check, ...] = (check_seeded_determinism, check_batch_size_equivalence, check_state_round_trip,
                             check_missing_column, check_nan_row, check_to_cpu, check_close, check_summary)


def check_operator(factory: Callable[[], Operator], data: Batch, *, batch_size: int | None = None,
                   sizes: Sequence[int] = (1, 7), rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Run every contract check (:data:`CHECKS`) on operators built by ``factory`` over ``data``.

    Args:
        factory: builds a fresh operator (same seed every time).
        data: a stream of a few dozen rows, as one batch.
        batch_size: the batch size to run at when the operator is batch-size dependent.
        sizes: the batch sizes compared with one whole-stream batch.
    """
    case = UnitTest({}, lambda: data, batch_size=batch_size, sizes=tuple(sizes), rtol=rtol, atol=atol)
    for check in CHECKS:
        check(factory, data, case)
