"""Alerts on hand-made scores: hysteresis, cool-down, episode ids, keys, batch sizes, resume."""

import numpy as np
import pyarrow as pa
import pytest

from operators.alerts import DEFAULT_ENTER, Alerts
from operators.htm import HTMDetector
from operators.nab.demo import DEFAULT_THRESHOLD
from stream import Batch
from stream.errors import CheckpointError, ConfigError, SchemaError
from stream.options import build


def scored(scores, keys=None, times=None) -> Batch:
    cols = {"key": keys or ["a"] * len(scores), "anomaly_likelihood": np.asarray(scores, dtype=float)}
    if times is not None:
        cols["ts"] = pa.array(np.asarray(times, dtype="int64") * 10**9, pa.timestamp("ns"))
    return Batch(pa.record_batch(cols), source="scores.csv")


def run(op, batch):
    out = op(batch)
    return (out.column("alert").to_pylist(), out.column("alert_active").to_pylist(),
            out.column("alert_episode").to_pylist())


def test_a_burst_makes_one_alert_and_hysteresis_holds_it_open():
    # 0.53 is under enter but over leave: the episode stays open through it
    op = Alerts(warmup=0, enter=0.6, leave=0.5)
    alert, active, episode = run(op, scored([0.1, 0.7, 0.9, 0.53, 0.65, 0.4, 0.2]))
    assert alert == [False, True, False, False, False, False, False]
    assert active == [False, True, True, True, True, False, False]
    assert episode == [None, 1, 1, 1, 1, None, None]


def test_without_hysteresis_a_hovering_score_opens_episode_after_episode():
    scores = [0.61, 0.59, 0.61, 0.59, 0.61]
    assert run(Alerts(warmup=0, enter=0.6, leave=0.6), scored(scores))[0] == [True, False, True, False, True]
    assert run(Alerts(warmup=0, enter=0.6, leave=0.5), scored(scores))[0] == [True, False, False, False, False]


def test_cooldown_in_events_suppresses_a_new_episode_right_after_one_closed():
    scores = [0.9, 0.1, 0.9, 0.9, 0.1, 0.9]
    # closes at row 1; rows 2 and 3 are the two cool-down events; row 5 is past them
    alert, _, episode = run(Alerts(warmup=0, enter=0.6, leave=0.5, cooldown=2), scored(scores))
    assert alert == [True, False, False, False, False, True]
    assert episode == [1, None, None, None, None, 2]
    assert run(Alerts(warmup=0, enter=0.6, leave=0.5), scored(scores))[2] == [1, None, 2, 2, None, 3]


def test_cooldown_in_event_time():
    scores = [0.9, 0.1, 0.9, 0.1, 0.9]
    times = [0, 10, 30, 70, 80]   # seconds; closed at t=10
    alert = run(Alerts(warmup=0, enter=0.6, leave=0.5, cooldown_seconds=60), scored(scores, times=times))[0]
    assert alert == [True, False, False, False, True]   # t=30 is 20 s after the close, t=80 is 70 s


def test_cooldown_seconds_without_a_time_column_is_refused_naming_it():
    with pytest.raises(SchemaError, match="cooldown_seconds needs the time column 'ts'"):
        Alerts(cooldown_seconds=5)(scored([0.9]))


def test_keys_have_their_own_episodes_numbered_from_one():
    keys = ["a", "b", "a", "b", "a", "b"]
    scores = [0.9, 0.1, 0.1, 0.9, 0.9, 0.1]
    alert, active, episode = run(Alerts(warmup=0, enter=0.6, leave=0.5), scored(scores, keys))
    assert alert == [True, False, False, True, True, False]
    assert episode == [1, None, None, 1, 2, None]
    assert pa.types.is_int64(Alerts()(scored([0.9])).column("alert_episode").type)


def test_defaults_are_nab_threshold_and_probation_of_the_htm_detector():
    op = Alerts()
    assert op.score == "anomaly_likelihood" and op.enter == DEFAULT_ENTER == DEFAULT_THRESHOLD
    assert op.warmup == HTMDetector().probationary_period == 750
    # during the detector's probation its score is only the spatial check (often 1.0): no alert
    early = scored([1.0] * 750)
    assert not any(run(op, early)[1])
    # then a likelihood of 0.56 opens an episode that 0.5 holds and 0.49 closes
    assert run(op, scored([0.56, 0.5, 0.49]))[1] == [True, True, False]


def test_resumed_run_continues_an_open_episode():
    first, second = Alerts(warmup=0, enter=0.6, leave=0.5), Alerts(warmup=0, enter=0.6, leave=0.5)
    run(first, scored([0.1, 0.9, 0.7]))
    from stream import state
    second.load_state_dict(state.loads(*state.dumps(first.state_dict())))
    alert, active, episode = run(second, scored([0.8, 0.2, 0.9]))
    assert alert == [False, False, True] and episode == [1, None, 2]
    assert second.summary() == {"alerts": 1, "active_keys": 1, "keys": 1}


def test_warmup_counts_each_keys_events_across_batches_and_resume():
    op = Alerts(warmup=3, enter=0.6, leave=0.5)
    assert run(op, scored([0.9, 0.9], ["a", "b"]))[0] == [False, False]
    from stream import state
    resumed = Alerts(warmup=3, enter=0.6, leave=0.5)
    resumed.load_state_dict(state.loads(*state.dumps(op.state_dict())))
    # a: events 2, 3 (warm-up), then 4 opens; b: events 2, 3, then 4
    assert run(resumed, scored([0.9, 0.9, 0.9, 0.9], ["a", "a", "b", "a"]))[0] == [False, False, False, True]


@pytest.mark.parametrize("state, message", [
    ({"keys": ["a"]}, "expected keys"),
    ({"keys": ["a", "a"], "seen": np.zeros(2, np.int64), "active": np.zeros(2, bool), "episodes": np.zeros(2, np.int64),
      "since": np.zeros(2, np.int64), "closed_at": np.zeros(2, np.int64)}, "distinct"),
    ({"keys": ["a"], "seen": np.zeros(1, np.int64), "active": np.zeros(2, bool), "episodes": np.zeros(1, np.int64),
      "since": np.zeros(1, np.int64), "closed_at": np.zeros(1, np.int64)}, "'active' is not 1 bool"),
    ({"keys": ["a"], "seen": np.zeros(1, np.int64), "active": np.zeros(1, bool), "episodes": -np.ones(1, np.int64),
      "since": np.zeros(1, np.int64), "closed_at": np.zeros(1, np.int64)}, "negative"),
])
def test_a_checkpoint_of_another_shape_is_refused(state, message):
    with pytest.raises(CheckpointError, match=message):
        Alerts().load_state_dict(state)


@pytest.mark.parametrize("options, message", [
    ({"enter": 0.5, "leave": 0.6}, "key 'leave': leave .0.6. must be at most the entering threshold .0.5."),
    ({"enter": 1.5}, "key 'enter': expected a number >= 0 and <= 1, got 1.5"),
    ({"cooldown": -1}, "key 'cooldown': expected an integer >= 0, got -1"),
    ({"cooldown": 1.5}, "key 'cooldown': expected an integer"),
    ({"warmup": -3}, "key 'warmup': expected an integer >= 0, got -3"),
    ({"score": 3}, "key 'score': expected a string"),
])
def test_bad_options_are_refused_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        build(Alerts, options, "p.toml [[operators]] #2 (alerts)")
