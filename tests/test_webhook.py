"""The webhook sink against a local HTTP server on 127.0.0.1: strict JSON bodies, retries
with back-off, an endpoint that recovers, one that never does (dead-lettered, or the run
stops), requests that are not retried, and flush waiting for every delivery."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from bad_input import assert_refused, run_cli, write_pipeline

from connectors.memory import MemorySink, MemorySource
from connectors.webhook import WebhookSink
from operators.alerts import Alerts
from stream import Batch, run
from stream.errors import ConfigError, SinkError
from stream.options import build
from stream.outputs import Output, Outputs


class Endpoint:
    """A local endpoint answering with ``statuses`` in turn (the last one from then on)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, dict]] = []  # (headers, body)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = endpoint.statuses.pop(0) if len(endpoint.statuses) > 1 else endpoint.statuses[0]
                endpoint.requests.append((dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def bodies(self) -> list[dict]:
        return [body for _, body in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The endpoint is on this machine: a proxy configured in the environment must not carry the requests."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def endpoint():
    made: list[Endpoint] = []

    def make(*statuses):
        made.append(Endpoint(statuses or (200,)))
        return made[-1]

    yield make
    for e in made:
        e.close()


def no_waiting(sink: WebhookSink) -> list[float]:
    """Record the back-off waits instead of sleeping them."""
    waits: list[float] = []
    sink._stop.wait = lambda seconds: waits.append(seconds) or False
    return waits


def rows(n=3) -> Batch:
    ts = pa.array(np.arange(n) * 60_000 + 1_767_225_600_000, pa.timestamp("ms", tz="UTC"))
    return Batch(pa.record_batch({"key": ["a"] * n, "ts": ts, "score": [0.9, float("nan"), 0.7][:n]}),
                 source="scores.csv", offset=10)


def test_each_row_is_posted_as_strict_json_and_flush_waits_for_delivery(endpoint):
    e = endpoint()
    sink = WebhookSink(e.url)
    sink.open(None)
    sink.write(rows())
    assert sink.flush() == {"delivered": 3, "dead_lettered": 0}
    assert len(e.requests) == 3   # delivered before flush returned: no wait in the test
    assert e.bodies[0] == {"key": "a", "ts": "2026-01-01T00:00:00.000Z", "score": 0.9}
    assert e.bodies[1]["score"] is None   # NaN is not JSON
    headers = e.requests[2][0]
    assert headers["Content-Type"] == "application/json" and headers["Idempotency-Key"] == "scores.csv:12"
    sink.close()


def test_an_endpoint_that_fails_then_recovers_gets_every_row_once_in_order(endpoint):
    e = endpoint(503, 503, 200)
    sink = WebhookSink(e.url, backoff=0.5, max_backoff=0.8)
    waits = no_waiting(sink)
    sink.open(None)
    sink.write(rows())
    assert sink.flush()["delivered"] == 3
    assert waits == [0.5, 0.8]   # doubled, capped at max_backoff
    assert [b["ts"] for b in e.bodies] == ["2026-01-01T00:00:00.000Z"] * 3 + \
        ["2026-01-01T00:01:00.000Z", "2026-01-01T00:02:00.000Z"]


def test_an_endpoint_that_always_fails_dead_letters_each_row_with_the_reason(endpoint):
    e = endpoint(500)
    sink, dead = WebhookSink(e.url, retries=2), MemorySink()
    no_waiting(sink)
    sink.use_dead_letter(dead)
    sink.open(None)
    sink.write(rows(2))
    assert sink.flush() == {"delivered": 0, "dead_lettered": 2}
    assert len(e.requests) == 6   # 1 + 2 retries per row
    letters = dead.to_table().to_pylist()
    assert [r["offset"] for r in letters] == [10, 11]
    assert "not delivered after 3 attempts: HTTP 500" in letters[0]["reason"] and e.url in letters[0]["reason"]
    assert json.loads(letters[0]["record"])["ts"].startswith("2026-01-01T00:00:00")


def test_without_a_dead_letter_sink_an_undeliverable_row_stops_the_run(endpoint):
    e = endpoint(500)
    sink = WebhookSink(e.url, retries=1)
    no_waiting(sink)
    sink.open(None)
    sink.write(rows(1))
    with pytest.raises(SinkError, match=r"after 2 attempts: HTTP 500.*scores.csv row 10.*\[dead_letter\]"):
        sink.flush()


def test_a_client_error_is_not_retried(endpoint):
    e = endpoint(400)
    sink, dead = WebhookSink(e.url), MemorySink()
    sink.use_dead_letter(dead)
    sink.open(None)
    sink.write(rows(1))
    sink.flush()
    assert len(e.requests) == 1 and "after 1 attempt: HTTP 400" in dead.to_table()["reason"][0].as_py()


def test_an_unreachable_endpoint_is_retried_then_dead_lettered(endpoint):
    e = endpoint()
    url = e.url
    e.close()   # nothing listens there any more: connection refused
    sink, dead = WebhookSink(url, retries=2), MemorySink()
    waits = no_waiting(sink)
    sink.use_dead_letter(dead)
    sink.open(None)
    sink.write(rows(1))
    assert sink.flush()["dead_lettered"] == 1 and len(waits) == 2


def test_only_alert_rows_reach_the_webhook_in_a_run(endpoint):
    e = endpoint()
    scores = [0.1, 0.9, 0.95, 0.2, 0.1, 0.9, 0.1]
    source = MemorySource({"key": ["m"] * 7, "ts": np.arange(7), "anomaly_likelihood": scores}, key="key", time="ts")
    everything = MemorySink()
    hook = WebhookSink(e.url)
    run(source, Alerts(warmup=0, enter=0.6, leave=0.5), Outputs([Output(everything), Output(
        hook, where="alert", columns=["key", "ts", "alert_episode"], label="alerts")]))
    assert e.bodies == [{"key": "m", "ts": 1, "alert_episode": 1}, {"key": "m", "ts": 5, "alert_episode": 2}]
    assert everything.to_table().num_rows == 7


def pipeline(folder: Path, url: str, dead: bool) -> Path:
    pacsv.write_csv(pa.table({"key": ["m"] * 6, "ts": np.arange(6), "x": [0.1, 0.9, 0.2, 0.1, 0.9, 0.1]}),
                    str(folder / "data.csv"))
    text = ('[source]\ntype = "csv"\npath = "data.csv"\nkey = "key"\ntime = "ts"\n'
            '[[operators]]\ntype = "alerts"\nscore = "x"\nenter = 0.6\nleave = 0.5\nwarmup = 0\n'
            f'[[outputs]]\ntype = "webhook"\nurl = "{url}"\nwhere = "alert"\nretries = 1\nbackoff = 0\n')
    if dead:
        text += '[dead_letter]\ntype = "csv"\npath = "dead.csv"\n'
    return write_pipeline(folder, text)


def test_pipeline_file_failures_go_to_the_dead_letter_sink(tmp_path, endpoint):
    e = endpoint(503)
    pipeline(tmp_path, e.url, dead=True)
    result = run_cli(["run", "pipeline.toml"], cwd=tmp_path)
    assert result.rc == 0, result.err
    dead = pacsv.read_csv(str(tmp_path / "dead.csv"))
    assert dead["offset"].to_pylist() == [1, 4] and len(e.requests) == 4


def test_pipeline_file_without_dead_letter_stops_with_a_clear_error(tmp_path, endpoint):
    e = endpoint(503)
    pipeline(tmp_path, e.url, dead=False)
    assert_refused(run_cli(["run", "pipeline.toml"], cwd=tmp_path), e.url, "HTTP 503", "data.csv row 1", rc=1)


@pytest.mark.parametrize("options, message", [
    ({"url": "ftp://host/x"}, "key 'url': url 'ftp://host/x': expected an http:// or https:// address"),
    ({"url": "http:///nohost"}, "key 'url'"),
    ({"url": "http://h/", "retries": -1}, "key 'retries': expected an integer >= 0"),
    ({"url": "http://h/", "timeout": 0}, "key 'timeout': expected a number > 0"),
    ({"url": "http://h/", "headers": {"X": 1}}, "key 'headers.X': expected a string"),
])
def test_bad_options_are_refused_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        build(WebhookSink, options, "p.toml [[outputs]] #1 (webhook)")


def test_credentials_in_the_url_stay_out_of_messages():
    sink = WebhookSink("https://user:secret@hooks.example.org:8443/a?b=1")
    assert "secret" not in sink.name and sink.name == "webhook:https://hooks.example.org:8443/a?b=1"


def test_every_checkpoint_covers_only_delivered_alerts(tmp_path, endpoint):
    from stream.checkpoint import CheckpointStore

    e = endpoint()
    taken: list[tuple[int, int, dict]] = []

    class Recording(CheckpointStore):
        def save(self, state):  # what the endpoint had received when the checkpoint was written
            taken.append((state["source"]["row"], len(e.requests), state["sink"]["alerts"]))
            return super().save(state)

    n = 60
    scores = np.where(np.arange(n) % 10 < 3, 0.9, 0.1)   # an episode opens every 10 rows
    source = MemorySource({"key": ["m"] * n, "ts": np.arange(n), "x": scores}, key="key", time="ts", batch_size=7)
    everything = MemorySink()
    run(source, Alerts("x", warmup=0, enter=0.6, leave=0.5), Outputs([Output(everything), Output(
        WebhookSink(e.url, queue_size=2), where="alert", label="alerts")]),
        batch_size=7, checkpoint=Recording(str(tmp_path / "ckpt")), checkpoint_every_batches=1)
    assert len(taken) >= 8
    for row, received, point in taken:
        opened = (np.arange(row) % 10 == 0).sum()   # alerts among the rows the checkpoint covers
        assert received == point["delivered"] == opened, (row, received, point)
