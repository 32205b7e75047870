"""Records from the request path to ClickHouse: a bounded queue, one writer thread, a local journal."""

from .journal import Journal, Recovered
from .metrics import PipelineMetrics
from .queue import Pipeline
from .writer import PipelineState, Writer, WriterConfig

__all__ = ["Journal", "Pipeline", "PipelineMetrics", "PipelineState", "Recovered", "Writer", "WriterConfig"]
