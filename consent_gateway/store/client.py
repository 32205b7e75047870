"""URL → clickhouse-connect client, behind a small object the rest of the package uses."""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
import lz4.frame
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from ..errors import StoreError


class Store:
    """One ClickHouse client with the database name it works in.

    The embedded engine (chdb) runs inside this process; its calls are serialised by a lock so the
    writer thread and request threads never enter it at once. A server client needs no such lock,
    but each thread still gets its own ``Store`` so HTTP sessions are not shared.
    """

    def __init__(
        self, client: Client, database: str, *, embedded: bool, url: str, compression: str | None = None
    ) -> None:
        self.client = client
        self.database = database
        self.embedded = embedded
        self._url = url
        # How insert bodies travel to a server: "lz4" (clickhouse-connect's default), "gzip" or None.
        self.compression = compression
        self._lock = threading.Lock() if embedded else None

    def __repr__(self) -> str:
        return f"Store({_redact(self._url)!r}, database={self.database!r})"

    def table(self, name: str) -> str:
        return f"`{self.database}`.`{name}`"

    def command(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> Any:
        return self._call(self.client.command, sql, parameters=parameters, settings=settings)

    def query_rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = self._call(self.client.query, sql, parameters=parameters)
        return list(result.result_rows)

    def query_dicts(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self._call(self.client.query, sql, parameters=parameters)
        return list(result.named_results())

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        column_types: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert Python rows; clickhouse-connect converts them (and loads pandas, hence numpy, to
        check for DataFrames). The gateway's own paths use ``insert_lines``; tools and tests use this."""
        if not rows:
            return
        self._call(
            self.client.insert,
            self.table(table),
            rows,
            column_names=list(column_names),
            column_type_names=list(column_types),
            settings=dict(settings or {}),
        )

    def insert_lines(
        self,
        table: str,
        lines: Sequence[bytes],
        column_names: Sequence[str],
        settings: Mapping[str, Any] | None = None,
        *,
        column_types: Sequence[str] | None = None,
    ) -> None:
        """Insert rows already encoded as JSONCompactEachRow lines (``rows.encode_line``).

        ClickHouse parses them itself; nothing is converted row by row in Python, and the embedded
        engine does that work without holding the interpreter lock. With ``column_types`` (the
        table's types, in ``column_names`` order) the embedded engine reads LowCardinality columns
        as plain strings and converts each column whole (see ``_insert_converted``).
        """
        if not lines:
            return
        body = b"\n".join(lines)
        if self.embedded and column_types is not None:
            self._insert_converted(table, body, column_names, column_types, settings or {})
            return
        if self.compression == "lz4":
            body = lz4.frame.compress(body)
        elif self.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)
        self._call(
            self.client.raw_insert,
            self.table(table),
            list(column_names),
            body,
            settings=dict(settings or {}),
            fmt="JSONCompactEachRow",
            compression=self.compression,
        )

    def _insert_converted(
        self, table: str, body: bytes, names: Sequence[str], types: Sequence[str], settings: Mapping[str, Any]
    ) -> None:
        """``INSERT … SELECT`` from the lines read with LowCardinality(String) columns as String.

        Parsing a row format straight into LowCardinality columns updates each column's dictionary
        value by value; read as String and converted a whole column at a time, the same rows cost
        the engine about half the CPU (13 LowCardinality columns of 26 in ``events``;
        ``benchmarks/insert_cpu.py``, docs/pipeline.md). The result, the deduplication
        token and the materialized views are those of a plain insert into the table.
        """
        structure = ", ".join(
            f"{_identifier(name)} {kind.replace(_LOW_CARDINALITY_STRING, 'String')}"
            for name, kind in zip(names, types, strict=True)
        )
        columns = ", ".join(_identifier(name) for name in names)
        with tempfile.NamedTemporaryFile(prefix="cg-insert-", suffix=".jsonl", delete=False) as fh:
            fh.write(body)
        try:
            # Every name and value below is quoted; none comes from a request.
            sql = (
                f"INSERT INTO {self.table(table)} ({columns}) SELECT * FROM "  # noqa: S608
                f"file({_sql_string(fh.name)}, 'JSONCompactEachRow', {_sql_string(structure)})"
            )
            if settings:
                sql += " SETTINGS " + ", ".join(f"{key} = {_sql_value(value)}" for key, value in settings.items())
            self._call(self.client.command, sql)
        finally:
            try:
                os.unlink(fh.name)
            except OSError:
                pass

    def close(self) -> None:
        if not self.embedded:
            try:
                self.client.close()
            except Exception:  # noqa: S110 - closing a dead connection has nothing to report
                pass

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._lock is None:
                return fn(*args, **kwargs)
            with self._lock:
                return fn(*args, **kwargs)
        except Exception as exc:
            raise StoreError(f"ClickHouse at {_redact(self._url)} failed: {exc}") from exc


_LOW_CARDINALITY_STRING = "LowCardinality(String)"

# ClickHouse error codes that blame the data rather than the server: CANNOT_PARSE_TEXT,
# INCORRECT_NUMBER_OF_COLUMNS, CANNOT_PARSE_QUOTED_STRING, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
# CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
# CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, CANNOT_PARSE_UUID (errorCodeToName).
DATA_ERRORS = frozenset({6, 7, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 376})


def error_code(exc: BaseException) -> int:
    """The ClickHouse error code behind ``exc`` (a ``StoreError`` or the driver's own error), 0 when
    there is none (a refused connection, a timeout). Taken from the exception the driver raised,
    which carries the server's or the embedded engine's code, never from message text."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClickHouseError):
            code = getattr(seen, "code", None)
            return code if isinstance(code, int) else 0
        seen = seen.__cause__
    return 0


def is_data_error(exc: BaseException) -> bool:
    """Whether ClickHouse refused a statement for its data (a parse or type error), not an outage."""
    return error_code(exc) in DATA_ERRORS


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return _sql_string(str(value))


# Clients of the embedded engine must share one lock per process: the engine is one per process.
_EMBEDDED_LOCKS: dict[str, threading.Lock] = {}

# chdb's connection module imports pyarrow when it is installed (chdb declares it), and pyarrow
# imports numpy. numpy's wheels bundle libquadmath, whose load-time constructor registers printf
# hooks with glibc; from then on every sprintf in the process takes glibc's slow positional path.
# Python itself formats with sprintf (dates' isoformat, asyncio task names), so the whole app pays:
# 75,677 instructions a page of the demo site behind the gateway, 8% (benchmarks/page_instructions.py).
# The gateway never asks chdb for Arrow results, and chdb treats pyarrow as optional.
_CHDB_CONNECTION_MODULE = "chdb.state.sqlitelike"
_ARROW_MODULES = ("pyarrow", "numpy", "pandas")


def _import_embedded_engine() -> None:
    """Import chdb's connection module without its optional Arrow support (see above).

    Nothing is hidden when the process has already loaded pyarrow, numpy or pandas (the app uses
    them: the hooks, if any, are in place already) or chdb's connection module. Only pyarrow is
    hidden, and only while that one module is imported; chdb itself is imported first, outside
    that window, since loading the engine takes a while.
    """
    import chdb  # noqa: F401  (the engine's library; it does not import pyarrow)

    if _CHDB_CONNECTION_MODULE in sys.modules or any(name in sys.modules for name in _ARROW_MODULES):
        return
    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # importing it raises ImportError now
    try:
        __import__(_CHDB_CONNECTION_MODULE)
    except ImportError:
        pass  # a chdb that needs pyarrow, or keeps its connections elsewhere: it loads as it is
    finally:
        if sys.modules.get("pyarrow", 0) is None:
            del sys.modules["pyarrow"]


def open_store(url: str, database: str, *, connect_timeout: float = 10, send_receive_timeout: float = 30) -> Store:
    """Open a client for ``url``: ``chdb:///path`` embeds ClickHouse, ``http(s)://`` talks to a server."""
    if url.startswith("chdb://"):
        try:
            _import_embedded_engine()
            client = clickhouse_connect.get_client(dsn=url)
        except Exception as exc:
            raise StoreError(
                f"cannot open the embedded ClickHouse at {url}: {exc}. Another process may hold its data "
                "directory; stop it, or use a different data_dir."
            ) from exc
        store = Store(client, database, embedded=True, url=url)
        store._lock = _EMBEDDED_LOCKS.setdefault("chdb", threading.Lock())
        return store
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    compress = query.get("compress", "lz4")
    try:
        client = clickhouse_connect.get_client(
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if parts.scheme == "https" else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            secure=parts.scheme == "https",
            database=query.get("database", "default"),
            connect_timeout=connect_timeout,
            send_receive_timeout=send_receive_timeout,
            compress=compress,
            autogenerate_session_id=False,
        )
    except Exception as exc:
        raise StoreError(f"cannot connect to ClickHouse at {_redact(url)}: {exc}") from exc
    body_compression = compress.lower() if compress.lower() in ("lz4", "gzip") else None
    return Store(client, database, embedded=False, url=url, compression=body_compression)


def _redact(url: str) -> str:
    """The URL without its password, fit for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
