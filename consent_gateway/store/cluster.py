"""Cluster mode: the migrations' statements rendered for a ClickHouse cluster.

Migrations are written once, for a single node. With a cluster name set, :func:`render` turns each
statement into its cluster form, so a migration appended later needs no cluster code of its own:

- ``CREATE DATABASE`` and views, roles and grants get ``ON CLUSTER``;
- a ``CREATE TABLE`` on a ``*MergeTree`` engine becomes ``<table>_local`` on every node, on the
  ``Replicated*MergeTree`` engine with the ``{shard}``/``{replica}`` macros, plus a ``Distributed``
  table under the original name, so inserts and queries keep using the names they always used;
- a materialized view reads and writes the local tables: each shard rolls up its own rows;
- ``ALTER TABLE`` (TTL, mutations) and ``DELETE FROM`` act on the local tables on every node, and
  column changes also reach the ``Distributed`` table.

TTL clauses travel with the table definition, so retention works the same on every replica.
Single-node statements pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

LOCAL_SUFFIX = "_local"
# Rows of one visitor land on one shard, so per-visitor questions (funnels, erasure counts) stay local.
SHARDING_KEYS = {
    "events": "visitor",
    "consent_receipts": "cityHash64(consent_id)",
}
DEFAULT_SHARDING_KEY = "rand()"
ZOOKEEPER_PATH = "/clickhouse/tables/{{shard}}/{{database}}/{table}"

_NAME = r"`(?P<db>[^`]+)`\.`(?P<table>[^`]+)`"
_CREATE_DATABASE = re.compile(r"^\s*CREATE\s+DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?(`[^`]+`|\w+)", re.I)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?" + _NAME, re.I)
_ENGINE = re.compile(r"ENGINE\s*=\s*(?P<family>\w*)MergeTree(?:\((?P<args>[^()]*)\))?", re.I)
_MATERIALIZED_VIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?" + _NAME, re.I)
_VIEW = re.compile(r"^\s*CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+(IF\s+NOT\s+EXISTS\s+)?" + _NAME, re.I)
_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+" + _NAME + r"\s+(?P<rest>.*)$", re.I | re.S)
_DELETE = re.compile(r"^\s*DELETE\s+FROM\s+" + _NAME + r"\s+(?P<rest>WHERE\b.*)$", re.I | re.S)
_ACCESS = re.compile(
    r"^\s*CREATE\s+(ROLE|USER|ROW\s+POLICY|SETTINGS\s+PROFILE|QUOTA)\s+(IF\s+NOT\s+EXISTS\s+)?(`[^`]+`|\w+)", re.I
)
_GRANT = re.compile(r"^\s*(GRANT|REVOKE)\s+", re.I)
_COLUMN_CHANGE = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.I)
_ANY_NAME = re.compile(r"`(?P<db>[^`]+)`\.`(?P<table>[^`]+)`")


def local_table(table: str, cluster: str) -> str:
    """The table that holds the rows: ``table`` itself on one node, ``table_local`` on a cluster."""
    return f"{table}{LOCAL_SUFFIX}" if cluster else table


def render(statements: Iterable[str], cluster: str) -> list[str]:
    """``statements`` for a single node (``cluster`` empty: unchanged) or for ``cluster``."""
    if not cluster:
        return list(statements)
    out: list[str] = []
    for statement in statements:
        out.extend(render_one(statement, cluster))
    return out


def render_one(statement: str, cluster: str) -> list[str]:
    """One single-node statement as the statements that do the same on ``cluster``."""
    on = f"ON CLUSTER `{cluster}`"
    if m := _CREATE_DATABASE.match(statement):
        return [_insert_after(statement, m.end(), on)]
    if (m := _CREATE_TABLE.match(statement)) and (engine := _ENGINE.search(statement)):
        return _sharded_table(statement, m, engine, cluster, on)
    if m := _MATERIALIZED_VIEW.match(statement):
        # Inserts reach each shard's local table, so its view reads and writes local tables too.
        return [f"{statement[: m.end()]} {on}{_ANY_NAME.sub(_to_local, statement[m.end() :])}"]
    if m := _VIEW.match(statement):
        return [_insert_after(statement, m.end(), on)]
    if m := _ALTER.match(statement):
        rest = m.group("rest")
        local = f"ALTER TABLE `{m['db']}`.`{m['table']}{LOCAL_SUFFIX}` {on} {rest}"
        if _COLUMN_CHANGE.match(rest):
            return [local, f"ALTER TABLE `{m['db']}`.`{m['table']}` {on} {rest}"]
        return [local]
    if m := _DELETE.match(statement):
        return [f"DELETE FROM `{m['db']}`.`{m['table']}{LOCAL_SUFFIX}` {on} {m['rest']}"]  # noqa: S608 - DDL text
    if m := _ACCESS.match(statement):
        return [_insert_after(statement, m.end(), on)]
    if m := _GRANT.match(statement):
        return [_insert_after(statement, m.end() - 1, on)]
    return [statement]


def _sharded_table(statement: str, m: re.Match[str], engine: re.Match[str], cluster: str, on: str) -> list[str]:
    db, table = m["db"], m["table"]
    local = f"{table}{LOCAL_SUFFIX}"
    args = [f"'{ZOOKEEPER_PATH.format(table=local)}'", "'{replica}'"]
    if engine["args"] and engine["args"].strip():
        args.append(engine["args"].strip())  # e.g. the version column of ReplacingMergeTree(ver)
    sql = f"{statement[: engine.start()]}ENGINE = Replicated{engine['family']}MergeTree({', '.join(args)})"
    sql += statement[engine.end() :]
    # The name comes before the engine, so its offsets still hold.
    sql = f"{sql[: m.start('db') - 1]}`{db}`.`{local}` {on}{sql[m.end() :]}"
    ine = "IF NOT EXISTS " if m["ine"] else ""
    key = SHARDING_KEYS.get(table, DEFAULT_SHARDING_KEY)
    distributed = (
        f"CREATE TABLE {ine}`{db}`.`{table}` {on} AS `{db}`.`{local}` "
        f"ENGINE = Distributed('{cluster}', '{db}', '{local}', {key})"
    )
    return [sql, distributed]


def _insert_after(statement: str, index: int, clause: str) -> str:
    return f"{statement[:index]} {clause}{statement[index:]}"


def _to_local(m: re.Match[str]) -> str:
    table = m["table"]
    if table.endswith(LOCAL_SUFFIX):
        return m.group(0)
    return f"`{m['db']}`.`{table}{LOCAL_SUFFIX}`"
