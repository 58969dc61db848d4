"""stream.options: a pipeline file's options checked against the signature of what they build."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytest

from stream import registry
from stream.errors import ConfigError, SourceError
from stream.options import at_least, between, build, check_options, one_of, options_of


@dataclass(frozen=True)
class Inner:
    mode: str = "plain"
    size: int = 4
    option_checks = {"mode": one_of("plain", "fast"), "size": at_least(1)}

    def __post_init__(self) -> None:
        if self.mode == "fast" and self.size > 8:
            raise ValueError("a fast Inner keeps size <= 8")


class Base:
    option_checks = {"batch_size": at_least(1)}

    def __init__(self, *, batch_size: int = 8, column: str = "x"):
        self.batch_size, self.column = batch_size, column


class Child(Base):
    option_checks = {"rate": between(0, 1)}

    def __init__(self, path: str, *, rate: float = 0.5, names: list[str] | None = None,
                 pair: tuple[float, float] = (0.0, 1.0), inner: Inner | None = None,
                 table: dict[str, float] | None = None, kind: Literal["a", "b"] = "a",
                 width: Annotated[int, at_least(2)] = 2, anything: Any = None,
                 text_or_list: str | list[str] | None = None, **common: Any):
        if path == "refuse":
            raise ValueError(f"path {path!r} is refused")
        if path == "quiet":
            raise ValueError("no reason given")
        if path == "missing":
            raise SourceError("missing: no such file")
        if path == "crash":
            raise ZeroDivisionError("division by zero")
        super().__init__(**common)
        self.path, self.rate, self.names, self.pair, self.inner = path, rate, names, pair, inner
        self.table, self.kind, self.width, self.text_or_list = table, kind, width, text_or_list


class FromConfig:
    def __init__(self, model: Any, *, seed: int = 0):
        self.model, self.seed = model, seed

    @classmethod
    def from_config(cls, model: str, params: dict[str, Any] | None = None, **kwargs: Any) -> FromConfig:
        return cls((model, params), **kwargs)


def refused(values: dict[str, Any], factory: Any = Child) -> str:
    with pytest.raises(ConfigError) as info:
        check_options(factory, values, "p.toml [x]")
    return str(info.value)


def test_options_follow_kwargs_up_the_class_hierarchy_and_from_config():
    assert {"path", "rate", "batch_size", "column"} <= set(options_of(Child))
    assert options_of(Child)["path"].required and not options_of(Child)["rate"].required
    assert options_of(Child)["batch_size"].check == at_least(1)   # declared on the base class
    assert list(options_of(FromConfig)) == ["model", "params", "seed"]


def test_good_values_are_converted_to_the_annotated_types():
    got = check_options(Child, {"path": "p", "rate": 1, "names": "value", "pair": [0, 2], "inner": {"size": 3},
                                "table": {"a": 1}, "kind": "b", "width": 3, "anything": [1, "x"],
                                "text_or_list": "t", "batch_size": 2}, "p.toml [x]")
    assert got["rate"] == 1.0 and isinstance(got["rate"], float)
    assert got["names"] == ["value"]            # one name, not its letters
    assert got["pair"] == (0.0, 2.0)
    assert got["inner"] == Inner(size=3)
    assert got["table"] == {"a": 1.0} and got["text_or_list"] == "t"


@pytest.mark.parametrize("values, message", [
    ({"path": 3}, "p.toml [x] key 'path': expected a string, got 3"),
    ({"path": "p", "batch_size": True}, "key 'batch_size': expected an integer >= 1, got true"),
    ({"path": "p", "batch_size": 0}, "key 'batch_size': expected an integer >= 1, got 0"),
    ({"path": "p", "batch_size": 2.0}, "key 'batch_size': expected an integer >= 1, got 2.0"),
    ({"path": "p", "rate": "fast"}, 'key \'rate\': expected a number >= 0 and <= 1, got "fast"'),
    ({"path": "p", "rate": 1.5}, "key 'rate': expected a number >= 0 and <= 1, got 1.5"),
    ({"path": "p", "rate": float("nan")}, "key 'rate': expected a number >= 0 and <= 1, got nan"),
    ({"path": "p", "names": [1, 2]}, "key 'names': expected a list of strings, got [1, 2]"),
    ({"path": "p", "pair": [1]}, "key 'pair': expected a list of 2 numbers, got [1]"),
    ({"path": "p", "kind": "c"}, 'key \'kind\': expected one of "a", "b", got "c"'),
    ({"path": "p", "width": 1}, "key 'width': expected an integer >= 2, got 1"),
    ({"path": "p", "table": {"a": "x"}}, 'key \'table.a\': expected a number, got "x"'),
    ({"path": "p", "inner": {"mode": "slow"}}, 'key \'inner.mode\': expected one of "plain", "fast", got "slow"'),
    ({"path": "p", "inner": {"size": 0}}, "key 'inner.size': expected an integer >= 1, got 0"),
    ({"path": "p", "inner": {"mode": "fast", "size": 9}}, "key 'inner.size': a fast Inner keeps size <= 8"),
    ({"path": "p", "inner": {"sise": 3}}, "key 'inner.sise': unknown key (did you mean 'size'?); known: mode, size"),
    ({"path": "p", "inner": "big"}, 'key \'inner\': expected a table of Inner options, got "big"'),
    ({"path": "p", "text_or_list": 3}, "key 'text_or_list': expected a string or a list of strings, got 3"),
    ({"path": "p", "colum": "x"}, "key 'colum': unknown key (did you mean 'column'?); known: anything,"),
    ({}, "p.toml [x]: missing required key 'path'"),
])
def test_bad_values_name_the_key_what_was_expected_and_what_was_given(values, message):
    assert message in refused(values)


def test_a_constructor_refusal_names_the_key_its_message_names():
    with pytest.raises(ConfigError, match=r"^p.toml \[x\] key 'path': path 'refuse' is refused$"):
        build(Child, {"path": "refuse"}, "p.toml [x]")
    with pytest.raises(ConfigError, match=r"^p.toml \[x\]: no reason given$"):
        build(Child, {"path": "quiet"}, "p.toml [x]")
    with pytest.raises(ConfigError, match=r"^p.toml \[x\]: ZeroDivisionError: division by zero$"):
        build(Child, {"path": "crash"}, "p.toml [x]")


def test_errors_that_already_name_their_file_pass_through():
    with pytest.raises(SourceError, match="^missing: no such file$"):
        build(Child, {"path": "missing"}, "p.toml [x]")


def test_build_calls_from_config_with_checked_values():
    made = build(FromConfig, {"model": "m", "params": {"k": 1}, "seed": 3}, "p.toml [x]")
    assert made.model == ("m", {"k": 1}) and made.seed == 3
    assert "key 'seed': expected an integer, got \"3\"" in refused({"model": "m", "seed": "3"}, FromConfig)


@pytest.mark.parametrize("group", ["sources", "operators", "sinks"])
def test_every_registered_type_has_annotations_that_resolve(group):
    # an annotation that does not resolve would silently check nothing
    for name in registry.names(group):
        cls = registry.lookup(group, name)
        for klass in cls.__mro__:
            for func in (vars(klass).get("__init__"), getattr(vars(klass).get("from_config"), "__func__", None)):
                if func is not None and klass is not object:
                    typing.get_type_hints(func, include_extras=True)
        assert options_of(cls) or name == "memory", f"{group} {name} takes no options"


def test_run_checks_its_own_settings():
    from stream import run
    from stream.operator import Operator

    class Nothing(Operator):
        def process(self, batch):
            return batch

    for bad in ({"batch_size": 0}, {"batch_size": -3}, {"read_ahead": 0}, {"max_delay": -1.0}, {"speed": 0},
                {"checkpoint_every_batches": 0}, {"checkpoint_every_seconds": -1}, {"batch_size": "8"}):
        with pytest.raises(ConfigError, match=f"run\\(\\) key '{next(iter(bad))}'"):
            run(None, Nothing(), **bad)
