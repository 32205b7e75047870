"""Records from the request path to ClickHouse: a bounded queue, one writer thread, a local journal."""

from .journal import Journal, MemoryJournal, Recovered
from .metrics import PipelineMetrics
from .queue import Pipeline
from .stats import PipelineStats
from .writer import PipelineState, Writer, WriterConfig

__all__ = [
    "Journal",
    "MemoryJournal",
    "Pipeline",
    "PipelineMetrics",
    "PipelineState",
    "PipelineStats",
    "Recovered",
    "Writer",
    "WriterConfig",
]
