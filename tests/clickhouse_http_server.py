"""TEST FIXTURE ONLY: a small ClickHouse HTTP interface over an embedded chdb engine.

This is not a ClickHouse server and must never be deployed. It exists because the test machines
cannot run a real ClickHouse server, and the gateway's ``http(s)://`` path (clickhouse-connect's
HTTP client, compression, retries, outages) must still be exercised against a real engine. Tests
start it as a separate process (so it owns its own chdb data path) and kill and restart it to
cause outages.

It serves what clickhouse-connect uses:

- SQL in the ``query`` parameter, or in the body when there is no ``query`` parameter;
- ``INSERT ... FORMAT Native`` or ``FORMAT JSONCompactEachRow`` with the data in the body,
  LZ4-framed when the request has ``Content-Encoding: lz4`` (decoded with ``lz4.frame``), zstd or gzip;
- ``param_*`` query parameters (bound by chdb) and other parameters as query settings;
- access-control statements (``CREATE ROLE``, ``GRANT``, ...) are accepted and ignored: the
  embedded engine has no users or roles, and the gateway's migrations create some for servers;
- responses with ``X-ClickHouse-Summary``, ``X-ClickHouse-Format``, ``X-ClickHouse-Timezone``,
  ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Server-Display-Name``, and errors as HTTP 500 with
  ``X-ClickHouse-Exception-Code``.

Run: ``python tests/clickhouse_http_server.py --port 18123 --data /tmp/chdata`` (prints ``ready``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# Parameters that steer the HTTP transport, not the query.
_TRANSPORT = {
    "query",
    "database",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "default_format",
    "enable_http_compression",
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "client_protocol_version",
    "cancel_http_readonly_queries_on_client_close",
    "user",
    "password",
    "buffer_size",
    "quota_key",
}
_INSERT_NATIVE = re.compile(rb"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(Native|JSONCompactEachRow)\s*$", re.I | re.S)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The embedded engine has no users or roles: access-control statements are accepted and ignored.
_ACCESS_CONTROL = re.compile(
    r"^\s*(CREATE\s+(ROLE|USER|ROW\s+POLICY|SETTINGS\s+PROFILE|QUOTA)\b|GRANT\b|REVOKE\b)", re.I
)


class Engine:
    """One chdb connection; calls are serialised because a connection is not re-entrant."""

    def __init__(self, path: str) -> None:
        self.conn = chdb.connect(path)
        self.lock = threading.Lock()

    def run(self, sql: str, fmt: str, params: dict[str, str], settings: dict[str, str], database: str) -> Any:
        with self.lock:
            self.conn.query(f"USE `{database}`", "TabSeparated") if database else None
            applied = []
            try:
                for key, value in settings.items():
                    if not _SETTING_NAME.match(key):
                        raise ValueError(f"bad setting name {key!r}")
                    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
                    self.conn.query(f"SET {key} = {quoted}", "TabSeparated")
                    applied.append(key)
                return self.conn.query(sql, fmt, params=params)
            finally:
                for key in applied:
                    try:
                        self.conn.query(f"SET {key} = DEFAULT", "TabSeparated")
                    except Exception:
                        pass


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "lz4":
        import lz4.frame

        # clickhouse-connect writes one LZ4 frame per Native block; decompress frame after frame.
        out = bytearray()
        rest = body
        while rest:
            d = lz4.frame.LZ4FrameDecompressor()
            out += d.decompress(rest)
            rest = d.unused_data if d.eof else b""
        return bytes(out)
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "zstd":
        from clickhouse_connect.driver.compression import _zstd_decompress

        return bytes(_zstd_decompress(body))
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class Handler(BaseHTTPRequestHandler):
    server_version = "ClickHouse-test-fixture"
    protocol_version = "HTTP/1.1"
    engine: Engine
    data_dir: str

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        self._handle(body)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _handle(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        if parts.path in ("/ping", "/"):
            if parts.path == "/ping" or not parts.query:
                self._send(200, b"Ok.\n", {})
                return
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/x-www-form-urlencoded") and body:
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            body = b""
        query_id = params.get("query_id") or str(uuid.uuid4())
        headers = {"X-ClickHouse-Query-Id": query_id}
        try:
            body = _decode_body(body, self.headers.get("Content-Encoding", ""))
            database = params.get("database", "")
            binds = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
            settings = {k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")}
            sql = params.get("query")
            if sql is None:
                # clickhouse-connect puts "INSERT ... FORMAT Native\n" in front of the Native data.
                first, _, rest = body.partition(b"\n")
                if _INSERT_NATIVE.match(first):
                    sql, body = first.decode("utf-8"), rest
                else:
                    sql, body = body.decode("utf-8"), b""
            self._execute(sql, body, database, binds, settings, headers)
        except Exception as exc:  # every engine error becomes an HTTP 500 the client can parse
            message = str(exc)
            code = re.search(r"Code: (\d+)", message)
            headers["X-ClickHouse-Exception-Code"] = code.group(1) if code else "1001"
            self._send(
                500, f"Code: {headers['X-ClickHouse-Exception-Code']}. DB::Exception: {message}\n".encode(), headers
            )

    def _execute(
        self,
        sql: str,
        data: bytes,
        database: str,
        binds: dict[str, str],
        settings: dict[str, str],
        headers: dict[str, str],
    ) -> None:
        if _ACCESS_CONTROL.match(sql):
            headers["X-ClickHouse-Summary"] = json.dumps({"read_rows": "0"})
            self._send(200, b"", headers)
            return
        insert = _INSERT_NATIVE.match(sql.encode("utf-8")) if data else None
        if insert is None and data:
            # The statement starts in the query parameter and its data follow in the body.
            head = sql.encode("utf-8") + b"\n" + data
            first, _, rest = head.partition(b"\n")
            insert = _INSERT_NATIVE.match(first)
            if insert is None:
                sql, data = head.decode("utf-8"), b""
            else:
                data = rest
        elif insert is None and sql.lstrip()[:6].upper() == "INSERT" and " FORMAT " in sql.upper():
            first, _, rest = sql.partition("\n")
            insert = _INSERT_NATIVE.match(first.encode("utf-8"))
            data = rest.encode("utf-8") if insert else data
        if insert is not None:
            target = insert.group(1).decode("utf-8")
            fmt = insert.group(2).decode("ascii")
            # Tests read this log to check what the client really sent (compression, settings).
            with open(os.path.join(self.data_dir, "inserts.log"), "a", encoding="utf-8") as log:
                encoding = self.headers.get("Content-Encoding", "") or "identity"
                entry = {"table": target, "encoding": encoding, "settings": settings, "format": fmt}
                log.write(json.dumps(entry) + "\n")
            fd, path = tempfile.mkstemp(suffix=".insert")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                quoted = "'" + path.replace("'", "\\'") + "'"
                result = self.engine.run(
                    f"INSERT INTO {target} FROM INFILE {quoted} FORMAT {fmt}",
                    "TabSeparated",
                    binds,
                    settings,
                    database,
                )
            finally:
                os.unlink(path)
            summary = {"written_rows": str(result.rows_read()), "written_bytes": str(result.bytes_read())}
            headers["X-ClickHouse-Summary"] = json.dumps(summary)
            self._send(200, b"", headers)
            return
        trailing = _TRAILING_FORMAT.search(sql)
        if trailing is not None:
            fmt = trailing.group(1)
            result = self.engine.run(sql, fmt, binds, settings, database)
            out = result.bytes() or b""
            headers["X-ClickHouse-Format"] = fmt
        else:
            fmt = params_format = "TabSeparatedWithNames"
            result = self.engine.run(sql, params_format, binds, settings, database)
            out = result.bytes() or b""
            if out:
                # Strip the names line: a command's body is plain TabSeparated.
                newline = out.find(b"\n")
                out = out[newline + 1 :] if newline >= 0 else b""
                headers["X-ClickHouse-Format"] = "TabSeparated"
            del fmt
        headers["X-ClickHouse-Summary"] = json.dumps(
            {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read())}
        )
        self._send(200, out, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {
            "X-ClickHouse-Server-Display-Name": "clickhouse-test-fixture",
            "X-ClickHouse-Timezone": "UTC",
            "Content-Type": "application/octet-stream",
            **headers,
        }
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FixtureServer:
    """Runs this fixture as a child process on a fixed port, so tests can kill and restart it."""

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"FixtureServer(port={self.port})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(self.port), "--data", str(self.data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the ClickHouse fixture did not start: {line!r}")
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the ClickHouse fixture did not listen in time")

    def kill(self) -> None:
        """SIGKILL: an outage with no goodbye, like a crashed server."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None

    def inserts(self) -> list[dict[str, Any]]:
        """Every INSERT this fixture received (across restarts): table, Content-Encoding, settings."""
        path = self.data / "inserts.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]

    def client(self, database: str = "default") -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.port, database=database, autogenerate_session_id=False
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TEST FIXTURE: ClickHouse HTTP interface over chdb")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="chdb data directory (one per fixture process)")
    args = parser.parse_args(argv)
    Handler.engine = Engine(args.data)
    Handler.data_dir = args.data
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
