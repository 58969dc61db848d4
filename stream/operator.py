"""The operator contract and `|` pipelines.

An operator turns a micro-batch into a micro-batch with its outputs appended. It is
prequential (outputs for an event are computed before it learns from that event), keeps
per-key state where its algorithm is per stream, and exposes ``state_dict()`` /
``load_state_dict()`` like a PyTorch module so a checkpoint is nested state dicts.

Input checks are declarative: ``requires`` maps column names to a kind (``"number"``,
``"integer"``, ``"string"``, ``"timestamp"``, ``"tensor"``, ``"any"``); the schema is
validated once per stream and numeric required columns are checked for NaN/inf on every
batch. Rows that fail go to the dead-letter sink when one is configured, otherwise they
raise :class:`~stream.errors.BadEventError` naming the row.

Example:
    >>> import pyarrow as pa
    >>> from stream import Batch, Operator
    >>> class Double(Operator):
    ...     requires = {"x": "number"}
    ...     def process(self, batch):
    ...         return batch.with_columns({"x2": batch.numpy("x") * 2})
    >>> class Count(Operator):
    ...     def __init__(self):
    ...         self.n = 0
    ...     def process(self, batch):
    ...         self.n += batch.num_rows
    ...         return batch
    ...     def state_dict(self):
    ...         return {"n": self.n}
    ...     def load_state_dict(self, state):
    ...         self.n = state["n"]
    >>> pipe = Double() | Count()
    >>> out = pipe(Batch(pa.record_batch({"x": [1.0, 2.0]})))
    >>> out.numpy("x2").tolist(), pipe.state_dict()
    ([2.0, 4.0], {'0.Double': {}, '1.Count': {'n': 2}})
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import spill
from .batch import Batch
from .errors import BadEventError, SchemaError
from .options import at_least

if TYPE_CHECKING:
    from .testing import UnitTest

#: Called with (batch of rejected rows, one reason per row); set by the runtime when a
#: dead-letter sink is configured.
RejectHandler = Callable[[Batch, list[str]], None]

_KIND_CHECKS: dict[str, Callable[[pa.DataType], bool]] = {
    "number": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
    "integer": pa.types.is_integer,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
    or pa.types.is_dictionary(t),
    "timestamp": lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_integer(t),
    "tensor": lambda t: isinstance(t, pa.FixedShapeTensorType) or pa.types.is_fixed_size_list(t)
    or pa.types.is_list(t),
    "any": lambda t: True,
}


class Operator:
    """Base class of every operator. Subclasses implement :meth:`process`.

    Hyper-parameters are declared once, as ``__init__``'s parameters: the arguments an
    operator was built with (defaults filled in) are :meth:`_get_params`, which drive
    ``repr`` and so the checkpoint fingerprint (a checkpoint of another configuration is
    refused), as River's ``_get_params`` does.

    >>> class Scale(Operator):
    ...     def __init__(self, factor: float = 2.0, column: str = "x"):
    ...         self.factor, self.column = factor, column
    >>> Scale(3.0)
    Scale(factor=3.0, column='x')
    >>> Scale()._get_params()
    {'factor': 2.0, 'column': 'x'}
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_params", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Operator, *args: Any, **kw: Any) -> None:
            # the outermost __init__ (the class built) records; a super().__init__ call does not
            if "_params" not in self.__dict__:
                try:
                    bound = signature.bind(self, *args, **kw)
                except TypeError:
                    pass  # the call itself raises it
                else:
                    bound.apply_defaults()
                    params: dict[str, Any] = {}
                    for name, value in list(bound.arguments.items())[1:]:
                        kind = signature.parameters[name].kind
                        if kind is inspect.Parameter.VAR_KEYWORD:
                            params.update(value)
                        elif kind is not inspect.Parameter.VAR_POSITIONAL:
                            params[name] = value
                    self._params = params
            init(self, *args, **kw)

        recording_init._records_params = True  # type: ignore[attr-defined]
        cls.__init__ = recording_init  # type: ignore[method-assign]

    def _get_params(self) -> dict[str, Any]:
        """The ``__init__`` arguments this operator was built with, defaults included."""
        return dict(self.__dict__.get("_params", {}))

    #: column name -> kind; see the module docstring.
    requires: dict[str, str] = {}
    #: parameters left out of ``repr`` (and so of the checkpoint fingerprint) because they
    #: change where or how fast an operator runs, not what it computes: a checkpoint moves
    #: between devices
    runtime_params: tuple[str, ...] = ("device", "max_resident_keys")
    #: per-key operators (those with the per-key hooks below): at most this many keys in
    #: memory, the least recently used spilled to disk (:mod:`stream.spill`); ``None``: off.
    #: Outputs do not depend on it, so it is a runtime parameter: a checkpoint resumes under any value.
    max_resident_keys: int | None = None
    #: checked when a pipeline file is loaded (see :mod:`stream.options`); subclasses add theirs
    option_checks: dict[str, Any] = {"max_resident_keys": at_least(1)}
    #: True when outputs depend on how the stream is cut into batches (mini-batch learners):
    #: the contract checks then run at the operator's own batch size.
    batch_size_dependent: bool = False

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        """Small configurations and inputs for the contract checks (:mod:`stream.testing`).

        Every registered operator declares at least one, so the contract gate can build fast
        instances of it, as River's ``_unit_test_params`` does.
        """
        return []

    # -- the contract -------------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state but the checkpoint holds {sorted(state)}")

    def to(self, device: Any) -> Operator:
        return self

    def close(self) -> None:
        """Release resources at the end of a run."""

    def summary(self) -> dict[str, Any]:
        """Figures for the end-of-run summary (its ``metrics`` under the operator's label,
        JSON-able values); empty: the operator reports nothing."""
        return {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def required_columns(self) -> dict[str, str]:
        """Columns this operator reads (override when they depend on parameters)."""
        return dict(self.requires)

    # -- per-key state: what spilling idle keys needs (see stream.spill) ------------------
    # An operator that keeps independent state per key implements all four; the engine then
    # honours ``max_resident_keys``. After ``process(batch)`` every key of the batch is resident.
    def resident_keys(self) -> list[Any]:
        """The keys whose state is in memory now."""
        return []

    def key_state(self, key: Any) -> dict[str, Any]:
        """The state of resident ``key`` as a state dict (numbers, strings, lists, dicts, arrays)."""
        raise NotImplementedError(f"{self.name} keeps no per-key state")

    def evict_key(self, key: Any) -> None:
        """Drop resident ``key``'s state from memory (its :meth:`key_state` was saved)."""
        raise NotImplementedError(f"{self.name} keeps no per-key state")

    def restore_key(self, key: Any, state: dict[str, Any]) -> None:
        """Make ``key`` resident again with ``state`` from :meth:`key_state` (untrusted: check it)."""
        raise NotImplementedError(f"{self.name} keeps no per-key state")

    key_state.not_per_key = True  # type: ignore[attr-defined]  # how stream.spill tells an override

    # -- input validation ---------------------------------------------------------
    def validate_schema(self, schema: pa.Schema, source: str = "") -> None:
        """Raise :class:`SchemaError` if a required column is missing or has a wrong type."""
        for col, kind in self.required_columns().items():
            idx = schema.get_field_index(col)
            if idx < 0:
                raise SchemaError(f"{source or '<stream>'}: {self.name} needs column {col!r}, "
                                  f"the stream has {schema.names}")
            typ = schema.field(idx).type
            if not _KIND_CHECKS[kind](typ):
                raise SchemaError(f"{source or '<stream>'}: {self.name} needs column {col!r} "
                                  f"of kind {kind}, got {typ}")

    def check_rows(self, batch: Batch) -> tuple[np.ndarray, list[str]] | None:
        """Find bad rows. Returns ``(bad_mask, reasons_for_bad_rows)`` or ``None`` if all good.

        The default rejects missing values in required columns and NaN/inf in required
        floating-point columns.
        """
        bad = np.zeros(batch.num_rows, dtype=bool)
        reasons: dict[int, str] = {}
        for col in self.required_columns():
            arr = batch.column(col)
            col_bad = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
            if col_bad is not None:
                for i in np.flatnonzero(col_bad & ~bad):
                    reasons[int(i)] = f"column {col!r} is missing (null)"
                bad |= col_bad
            if pa.types.is_floating(arr.type):
                values = arr.to_numpy(zero_copy_only=False)
                col_bad = ~np.isfinite(values)
                if arr.null_count:
                    col_bad &= ~arr.is_null().to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(col_bad & ~bad):
                    reasons[int(i)] = f"column {col!r} is {float(values[i])}, not a finite number"
                bad |= col_bad
        if not reasons:
            return None
        return bad, [reasons[int(i)] for i in np.flatnonzero(bad)]

    # -- running ----------------------------------------------------------------------
    def __call__(self, batch: Batch, on_reject: RejectHandler | None = None) -> Batch:
        """Validate (schema once per stream, rows every batch), then :meth:`process`."""
        seen = getattr(self, "_seen_schema", None)
        if seen is None or not seen.equals(batch.schema):
            self.validate_schema(batch.schema, batch.source)
            self._seen_schema = batch.schema
        found = self.check_rows(batch)
        if found is not None:
            bad, reasons = found
            if on_reject is None:
                i = int(np.flatnonzero(bad)[0])
                raise BadEventError(reasons[0], source=batch.source, offset=int(batch.positions()[i]),
                                    key=batch.keys()[i] if batch.key_column in batch else None,
                                    operator=self.name)
            on_reject(batch.filter(bad), [f"{self.name}: {r}" for r in reasons])
            batch = batch.filter(~bad)
            if batch.num_rows == 0:
                return batch
        spiller = spill.spiller_of(self)
        if spiller is None:
            return self.process(batch)
        spiller.before(batch)
        out = self.process(batch)
        spiller.after()
        return out

    def __or__(self, other: Operator) -> Pipeline:
        return Pipeline([self, other])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_show(v)}" for k, v in self._get_params().items()
                           if k not in self.runtime_params)
        return f"{type(self).__name__}({params})"


def _show(value: Any) -> str:
    """A parameter as ``repr`` shows it: its repr, or its class name for an object whose repr
    names a memory address or spans lines without describing its parameters (a torch module)."""
    text = repr(value)
    if " at 0x" in text or ("\n" in text and not hasattr(value, "_get_params")):
        return repr(type(value).__name__)
    return text


class Pipeline(Operator):
    """Operators applied one after the other; itself an operator.

    Records the time spent in each operator (``timings``) for the run summary.
    """

    def __init__(self, operators: Iterable[Operator]):
        self.operators: list[Operator] = []
        for op in operators:
            self.operators.extend(op.operators if isinstance(op, Pipeline) else [op])
        self.timings: dict[str, float] = {self._label(i, op): 0.0 for i, op in enumerate(self.operators)}

    @staticmethod
    def _label(i: int, op: Operator) -> str:
        return f"{i}.{op.name}"

    def __or__(self, other: Operator) -> Pipeline:
        return Pipeline([*self.operators, other])

    def __call__(self, batch: Batch, on_reject: RejectHandler | None = None) -> Batch:
        for i, op in enumerate(self.operators):
            if batch.num_rows == 0:
                break
            t0 = time.perf_counter()
            batch = op(batch, on_reject)
            self.timings[self._label(i, op)] += time.perf_counter() - t0
        return batch

    def process(self, batch: Batch) -> Batch:
        return self(batch)

    def state_dict(self) -> dict[str, Any]:
        # spill.state_of: an operator's own state_dict, plus its spilled keys when it has some
        return {self._label(i, op): spill.state_of(op) for i, op in enumerate(self.operators)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = [self._label(i, op) for i, op in enumerate(self.operators)]
        if sorted(state) != sorted(expected):
            raise ValueError(f"state is for operators {sorted(state)}, pipeline has {expected}")
        for i, op in enumerate(self.operators):
            spill.load_into(op, state[self._label(i, op)], self._label(i, op))

    def to(self, device: Any) -> Pipeline:
        for op in self.operators:
            op.to(device)
        return self

    def close(self) -> None:
        for op in self.operators:
            op.close()

    def __repr__(self) -> str:
        return " | ".join(repr(op) for op in self.operators)
