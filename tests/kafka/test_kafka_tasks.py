"""Per-partition state without a broker: the engine hooks a partitioned source relies on."""

from __future__ import annotations

import pyarrow as pa
from kafka.detector import ZScore
from streams import ListSink

from stream import Batch, CheckpointStore, Pipeline, Source, run
from stream.connector import RunContext
from stream.tasks import TASK_COLUMN, PartitionedPipeline, PartitionStore


class TwoPartitions(Source):
    """Rows of partitions 0 and 1; asks for a checkpoint (as on revocation) half-way."""

    def __init__(self):
        self.log: list = []
        self.pos: dict[str, int] = {}

    def bind(self, run_: RunContext) -> RunContext:
        self.pipe = PartitionedPipeline(run_.pipeline)
        self.names = {0: "t-0", 1: "t-1"}
        self.store = PartitionStore(run_.store, self.names)
        self.checkpoint_now = run_.checkpoint_now
        for task, name in self.names.items():
            self.pipe.add(task, name)
        return RunContext(self.pipe, run_.sink, self.store, run_.checkpoint_now)

    def batches(self, position=None):
        for i in range(6):
            task = i % 2
            rows = {"key": [f"k{task}"] * 10, "x": [float(j * (i + 1)) for j in range(10)],
                    TASK_COLUMN: [task] * 10}
            yield Batch(pa.record_batch(rows), source=self.names[task], row_offsets=list(range(i * 10, i * 10 + 10)))
            if i == 2:
                self.checkpoint_now()  # returns once the 3 batches are processed and checkpointed
                self.log.append(("barrier", dict(self.committed)))

    def position_after(self, batch):
        tasks, offsets = batch.numpy(TASK_COLUMN), batch.positions()
        for task in set(tasks.tolist()):
            self.pos[self.names[task]] = int(offsets[tasks == task].max()) + 1
        return dict(self.pos)

    def checkpointed(self, position):
        self.committed = dict(position)


def test_checkpoint_now_processes_what_was_read_then_checkpoints_each_partition(tmp_path):
    src = TwoPartitions()
    src.committed = {}
    out = ListSink()
    run(src, ZScore(), out, checkpoint=str(tmp_path), batch_size=1000, max_delay=10.0, check_order=False)
    # the barrier came back after batches 0..2 (offsets up to 30) were processed and committed
    assert src.log == [("barrier", {"t-0": 30, "t-1": 20})]
    assert out.table().num_rows == 60
    # each partition has its own checkpoints; the state of t-0 is the state of key k0 only
    store = PartitionStore(CheckpointStore(str(tmp_path)), {0: "t-0", 1: "t-1"})
    saved = store.restore("t-0", None)
    assert saved["position"] == 50 and list(saved["operators"]["0.ZScore"]["n"]) == ["k0"]
    store.mark_committed("t-1", 1)
    assert store.committed_seq("t-1") == 1 and store.committed_seq("t-0") is None


def test_partitioned_pipeline_state_moves_with_its_partition():
    pipe = PartitionedPipeline(Pipeline([ZScore()]))
    pipe.add(0, "t-0")
    batch = Batch(pa.record_batch({"key": ["a", "a", "a"], "x": [1.0, 2.0, 9.0], TASK_COLUMN: [0, 0, 0]}))
    pipe(batch.slice(0, 2))
    state = pipe.remove(0)
    other = PartitionedPipeline(Pipeline([ZScore()]))  # another worker takes partition 0 over
    other.add(0, "t-0", state)
    moved = other(batch.slice(2)).numpy("score")
    fresh = PartitionedPipeline(Pipeline([ZScore()]))
    fresh.add(0, "t-0")
    assert moved.tolist() == fresh(batch).numpy("score")[2:].tolist()
