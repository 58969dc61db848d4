"""hebbstream's engine: micro-batches, operators, pipelines, the run loop, checkpoints.

Example:
    >>> from stream import Batch, Operator, Pipeline, Source, Sink, run, CheckpointStore
"""

from .batch import Batch
from .checkpoint import CheckpointStore
from .connector import Sink, Source
from .errors import BadEventError, CheckpointError, ConfigError, HebbstreamError, SchemaError, SourceError
from .operator import Operator, Pipeline
from .runtime import machine_info, run

__all__ = [
    "Batch", "CheckpointStore", "Sink", "Source", "Operator", "Pipeline", "run", "machine_info",
    "HebbstreamError", "BadEventError", "SchemaError", "SourceError", "CheckpointError", "ConfigError",
]
