"""``--serve``: Prometheus metrics (read back with prometheus_client's own parser),
health and readiness, and a server that serves only its own pages, read-only."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from streams import ListSink
from waiting import wait_until

from connectors.memory import MemorySource
from stream import Batch, CheckpointStore, Operator, Source, run
from stream.serve import ServeSettings, serving


class Flag(Operator):
    """A stand-in for the alerts operator: its score and alert columns."""

    def process(self, batch):
        x = batch.numpy("value")
        return batch.with_columns({"anomaly_likelihood": x / 100, "alert": x >= 95,
                                   "alert_active": x >= 95, "alert_episode": pa.array([None] * len(x), pa.int64())})


def get(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def families(url: str) -> dict:
    status, text, headers = get(url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, name: str, **labels) -> float:
    matches = [s.value for f in fams.values() for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_metrics_count_what_the_run_did_and_parse_as_prometheus(tmp_path):
    n = 100
    keys = np.array(["a", "b", "c", "d"])[np.arange(n) % 4]
    ts = np.arange(n)
    ts[50] = -1  # time goes backwards for key c: dead-lettered
    table = pa.table({"key": keys, "ts": ts, "value": np.arange(n, dtype=float)})
    with serving(ServeSettings(address="127.0.0.1:0", budget=1.0)) as (live, url):
        run(MemorySource(table, time="ts"), Flag(), ListSink(), dead_letter=ListSink(), batch_size=10,
            checkpoint=CheckpointStore(str(tmp_path / "ck")), checkpoint_every_batches=3, observer=live)
        fams = families(url)
    assert value(fams, "hebbstream_events_read_total") == n
    assert value(fams, "hebbstream_events_written_total") == n - 1
    assert value(fams, "hebbstream_dead_letter_total") == 1
    assert value(fams, "hebbstream_alerts_total") == 5  # values 95..99
    assert value(fams, "hebbstream_active_keys") == 4
    assert value(fams, "hebbstream_batch_latency_seconds_count") == 10
    assert fams["hebbstream_batch_latency_seconds"].type == "histogram"
    assert value(fams, "hebbstream_operator_seconds_total", operator="1.Flag") > 0
    assert value(fams, "hebbstream_checkpoints_total") == 4  # every 3 of 10 batches, and the final one
    assert value(fams, "hebbstream_checkpoint_duration_seconds") >= 0
    assert abs(value(fams, "hebbstream_last_checkpoint_timestamp_seconds") - time.time()) < 600
    # bounded label cardinality: no key ever becomes a label
    labels = {k for f in fams.values() for s in f.samples for k in s.labels}
    assert labels <= {"operator", "partition", "le"}


class Lagging(Source):
    """A source that knows its lag per partition."""

    def batches(self, position=None):
        yield Batch(pa.record_batch({"value": [1.0, 2.0]}), source="lagging")

    def lag(self):
        return {"topic-0": 7, "topic-1": 0}


def test_source_lag_per_partition_and_event_time_delay_of_a_paced_replay():
    with serving(ServeSettings(address="127.0.0.1:0", budget=1.0)) as (live, url):
        run(Lagging(), Flag(), observer=live)
        fams = families(url)
    assert value(fams, "hebbstream_source_lag", partition="topic-0") == 7
    assert value(fams, "hebbstream_source_lag", partition="topic-1") == 0
    table = pa.table({"ts": np.arange(20) * 1000, "value": np.arange(20.0)})
    with serving(ServeSettings(address="127.0.0.1:0", budget=1.0)) as (live, url):
        run(MemorySource(table, time="ts"), Flag(), observer=live, speed=1e6)
        fams = families(url)
    assert value(fams, "hebbstream_event_time_delay_seconds") >= 0


class Stalling(Source):
    """Yields a batch every few milliseconds until ``stall`` is set, then nothing until ``go``
    (a stalled broker, a stuck file)."""

    def __init__(self):
        self.stall, self.go = threading.Event(), threading.Event()

    def batches(self, position=None):
        i = 0
        while not self.stall.is_set():
            yield Batch(pa.record_batch({"value": [float(i)]}), source="stalling", offset=i)
            i += 1
            time.sleep(0.005)
        self.go.wait()


def _until(check, what: str):
    return wait_until(check, what)


def test_readyz_is_503_before_the_start_200_while_batches_flow_and_503_once_the_source_stalls():
    source = Stalling()
    with serving(ServeSettings(address="127.0.0.1:0", ready_within=0.5)) as (live, url):
        status, text, _ = get(url + "/readyz")
        assert status == 503 and "not restored" in text
        assert get(url + "/healthz")[0] == 200
        runner = threading.Thread(target=run, args=(source, Flag()), kwargs={"observer": live, "max_delay": 0.0})
        runner.start()
        try:
            _until(lambda: get(url + "/readyz")[0] == 200, "ready while batches flow")
            source.stall.set()
            status, text, _ = _until(lambda: (r := get(url + "/readyz"))[0] == 503 and r, "503 on a stall")
            assert "no batch processed" in text and "ready_within" in text
            assert get(url + "/healthz")[0] == 200  # alive all the same
            assert value(families(url), "hebbstream_ready") == 0
        finally:
            source.stall.set()
            source.go.set()
            runner.join()
        status, text, _ = get(url + "/readyz")
        assert status == 503 and "ended" in text


def test_the_server_is_read_only_and_serves_only_its_own_pages():
    with serving(ServeSettings(address="127.0.0.1:0", budget=1.0)) as (live, url):
        host = url.split("//")[1]
        assert host.startswith("127.0.0.1:")
        status, page, headers = get(url + "/")
        assert status == 200 and "<svg" in page and "dashboard.js" in page
        assert "default-src 'self'" in headers["Content-Security-Policy"]  # nothing from elsewhere
        assert "http" not in page.replace("http://www.w3.org", "")  # no CDN link
        assert get(url + "/dashboard.js")[2]["Content-Type"].startswith("text/javascript")
        for path in ("/../../etc/passwd", "/static/dashboard.html", "/%2e%2e/pyproject.toml",
                     "/dashboard.js/../../../../etc/passwd", "//etc/passwd", "/stream/serve/live.py"):
            assert get(url + path)[0] == 404, path
        for method in ("POST", "PUT", "DELETE"):
            request = urllib.request.Request(url + "/metrics", data=b"x", method=method)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, timeout=5)
            assert err.value.code == 405
        status, body, _ = get(url + "/api/series?key=nope")
        assert status == 404 and "nope" in json.loads(body)["error"]


def test_the_dashboard_api_ranks_keys_and_gives_a_keys_window():
    n = 40
    keys = np.where(np.arange(n) < 20, "quiet", "loud")
    table = pa.table({"key": keys, "value": np.where(keys == "loud", 99.0, 1.0)})
    with serving(ServeSettings(address="127.0.0.1:0", window=8, budget=1.0)) as (live, url):
        run(MemorySource(table), Flag(), observer=live, batch_size=7)
        ranked = json.loads(get(url + "/api/keys")[1])
        series = json.loads(get(url + "/api/series?key=loud")[1])
        summary = json.loads(get(url + "/api/summary")[1])
    assert [k["key"] for k in ranked] == ["loud", "quiet"]
    assert len(series["x"]) == 8 and series["score"] == [0.99] * 8  # the window, not the whole stream
    assert series["alerts"] == list(range(8))
    assert summary["events_read"] == n and summary["alerts"] == 20


def test_the_default_address_is_localhost():
    assert ServeSettings().address.startswith("127.0.0.1:")
