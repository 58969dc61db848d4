"""TTA operators inside the engine: stream.run, checkpoint and resume in the middle of a
mini-batch, and a TOML pipeline that loads the model from a file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from connectors.memory import MemorySink, MemorySource
from operators.tta import NHL, Tent
from operators.tta.models import build_model
from stream import Batch, run
from stream.batch import to_arrow
from stream.config import load

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_model():
    torch.manual_seed(1)
    return build_model("small_cnn", width=4).eval()


def images(n=60):
    return np.random.default_rng(5).random((n, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("cls", [Tent, NHL], ids=lambda c: c.__name__)
def test_run_matches_direct_calls(cls):
    model, x = tiny_model(), images()
    direct = cls(model, batch_size=8, lr=1e-2, device="cpu")(Batch(pa.record_batch({"image": to_arrow(x)})))
    sink = MemorySink()
    run(MemorySource({"image": x}, batch_size=7), cls(model, batch_size=8, lr=1e-2, device="cpu"), sink,
        batch_size=10, check_order=False)
    got = sink.to_table()
    for col in ("prediction", "confidence", "entropy"):
        np.testing.assert_allclose(got[col].to_numpy(), direct.numpy(col), rtol=1e-5, atol=1e-6)


def test_checkpoint_resume_in_the_middle_of_a_mini_batch(tmp_path):
    model, x = tiny_model(), images()

    def op():
        return NHL(model, batch_size=8, lr=1e-2, hebbian_lr=0.05, device="cpu")

    whole = MemorySink()
    run(MemorySource({"image": x}, batch_size=10), op(), whole, batch_size=10, check_order=False)
    sink = MemorySink()
    ckpt = str(tmp_path / "ckpt")
    first = run(MemorySource({"image": x}, batch_size=10), op(), sink, batch_size=10,
                checkpoint=ckpt, checkpoint_every_batches=1, max_events=30, check_order=False)
    assert first["events"] == 30    # 30 = 3 mini-batches of 8 + 6 rows waiting in the buffer
    second = run(MemorySource({"image": x}, batch_size=10), op(), sink, batch_size=10,
                 checkpoint=ckpt, resume=True, check_order=False)
    assert second["resumed_from"] == {"row": 30}
    a, b = whole.to_table(), sink.to_table()
    assert a.num_rows == b.num_rows == len(x)
    assert a["prediction"].to_pylist() == b["prediction"].to_pylist()
    np.testing.assert_allclose(a["entropy"].to_numpy(), b["entropy"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_toml_pipeline_with_model_path(tmp_path):
    model, x = tiny_model(), images(20)
    weights = tmp_path / "digits_cnn.pt"
    torch.save(model.state_dict(), weights)
    data = tmp_path / "images.arrow"
    table = pa.table({"image": to_arrow(x)})
    with pa.ipc.new_file(str(data), table.schema) as w:
        w.write_table(table)
    toml = tmp_path / "tta.toml"
    toml.write_text(f"""
[source]
type = "arrow"
path = "{data}"

[[operators]]
type = "nhl"
model_path = "{weights}"
arch = "small_cnn"
arch_params = {{ width = 4 }}
batch_size = 4
device = "cpu"

[run]
batch_size = 6
check_order = false
""")
    spec = load(str(toml))
    sink = MemorySink()
    run(spec.source, spec.pipeline, sink, **spec.run_kwargs)
    got = sink.to_table()
    want = NHL(model, batch_size=4, device="cpu")(Batch(pa.record_batch({"image": to_arrow(x)})))
    assert got["prediction"].to_pylist() == want.numpy("prediction").tolist()
    shown = repr(spec.pipeline)  # the pipeline file's parameters: the checkpoint fingerprint
    assert shown.startswith("NHL(model=None, ") and "arch='small_cnn'" in shown and "batch_size=4" in shown
