"""The contract gate: every registered operator goes through every contract check.

Operators are found the way a pipeline file finds them (the ``hebbstream.operators``
entry points), plus the engine's own operators that run without being named in a
pipeline file (:class:`~stream.checks.EventTimeOrder`, and
:class:`~stream.tasks.PartitionedPipeline`, one pipeline copy per Kafka
partition). Each operator declares small configurations in ``_unit_test_params()``; each
(operator, configuration, check) is a test of its own, as River's ``check_estimator``
yields its checks.
"""

from __future__ import annotations

import pytest

from stream.checks import EventTimeOrder
from stream.registry import lookup, names
from stream.tasks import PartitionedPipeline
from stream.testing import CHECKS

OPERATORS = {**{name: lookup("operators", name) for name in names("operators")},
             "event_time_order": EventTimeOrder, "partitioned_pipeline": PartitionedPipeline}
CASES = {name: cls._unit_test_params() for name, cls in OPERATORS.items()}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operator_declares_unit_test_params(name):
    assert CASES[name], f"{OPERATORS[name].__qualname__} declares no _unit_test_params()"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n]))],
                         ids=lambda v: str(v))
def test_contract(name, index, check, torch_one_thread):
    case = CASES[name][index]
    check(case.factory(OPERATORS[name]), case.data(), case)
