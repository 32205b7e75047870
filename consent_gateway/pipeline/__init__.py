"""Records from the request path to ClickHouse: a bounded queue and one writer thread."""

from .queue import Pipeline
from .writer import Writer

__all__ = ["Pipeline", "Writer"]
