"""Cluster mode DDL: checked by ClickHouse's own parser; the single-node path runs for real."""

from __future__ import annotations

import re

import pytest

from consent_gateway import Settings, SettingsError
from consent_gateway.store import Store, migrate
from consent_gateway.store.cluster import render
from consent_gateway.store.schema import MIGRATIONS, migration_statements

CLUSTER = "analytics_cluster"


def parse(store: Store, sql: str) -> str:
    """ClickHouse's canonical form of ``sql``; raises if its parser rejects the statement."""
    return str(store.query_rows("SELECT formatQuery({sql:String})", {"sql": sql})[0][0])


def test_every_cluster_statement_parses(store: Store) -> None:
    statements = migration_statements(store, cluster=CLUSTER)
    assert len(statements) > len(migration_statements(store))  # local + Distributed per table
    backfills = 0
    for sql in statements:
        formatted = parse(store, sql)
        if formatted.startswith("INSERT INTO"):
            # A backfill reads and writes the Distributed tables, which reach every shard.
            assert "_local" not in formatted, formatted
            backfills += 1
            continue
        assert "ON CLUSTER" in formatted, formatted
    assert backfills == 1  # the sums of the visits built before them


def test_tables_become_replicated_local_tables_behind_distributed_ones(store: Store) -> None:
    db = store.database
    formatted = [parse(store, sql) for sql in migration_statements(store, cluster=CLUSTER)]
    by_name = {}
    for sql in formatted:
        m = re.match(r"CREATE TABLE IF NOT EXISTS (\S+)", sql)
        if m:
            by_name[m.group(1).replace("`", "")] = sql

    events_local = by_name[f"{db}.events_local"]
    assert f"ON CLUSTER {CLUSTER}" in events_local
    replicated = "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/events_local', '{replica}')"
    assert replicated in events_local
    assert "TTL toDateTime(ts) + toIntervalMonth(3)" in events_local  # same TTL as one node
    assert "ttl_only_drop_parts = 1" in events_local
    assert f"ENGINE = Distributed('{CLUSTER}', '{db}', 'events_local', visitor)" in by_name[f"{db}.events"]
    assert f"AS {db}.events_local" in by_name[f"{db}.events"]

    receipts_local = by_name[f"{db}.consent_receipts_local"]
    path = "'/clickhouse/tables/{shard}/{database}/consent_receipts_local'"
    assert f"ReplicatedMergeTree({path}, '{{replica}}')" in receipts_local
    assert "toIntervalYear(5)" in receipts_local
    assert "cityHash64(consent_id)" in by_name[f"{db}.consent_receipts"]

    # The migrations table is replicated too, or a node would re-run migrations another one applied.
    assert "ReplicatedReplacingMergeTree(" in by_name[f"{db}.schema_migrations_local"]


def test_retention_settings_reach_the_cluster_tables(store: Store) -> None:
    formatted = "\n".join(
        parse(store, sql) for sql in migration_statements(store, cluster=CLUSTER, events_months=6, receipts_years=3)
    )
    assert "toIntervalMonth(6)" in formatted and "toIntervalYear(3)" in formatted
    assert "toIntervalMonth(3)" not in formatted.split("events_daily")[0]


def test_single_node_statements_are_unchanged(store: Store) -> None:
    single = migration_statements(store)
    assert render(single, "") == single
    assert not any("ON CLUSTER" in sql or "Replicated" in sql or "Distributed" in sql for sql in single)


def test_a_migration_appended_later_gets_its_cluster_form() -> None:
    """An analytics migration written for one node (rollup, view, role) needs no cluster code."""
    appended = [
        "CREATE TABLE IF NOT EXISTS `db`.`daily` (`day` Date, `hits` SimpleAggregateFunction(sum, UInt64)) "
        "ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(day) ORDER BY day TTL day + toIntervalMonth(25) DELETE",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.`daily_mv` TO `db`.`daily` AS "
        "SELECT toDate(ts) AS day, toUInt64(count()) AS hits FROM `db`.`events` GROUP BY day",
        "CREATE VIEW IF NOT EXISTS `db`.`report` AS SELECT day, sum(hits) AS hits FROM `db`.`daily` GROUP BY day",
        "CREATE ROLE IF NOT EXISTS `marketing`",
        "GRANT SELECT ON `db`.`report` TO `marketing`",
        "ALTER TABLE `db`.`events` MODIFY TTL toDateTime(ts) + toIntervalMonth(6) DELETE",
        "ALTER TABLE `db`.`events` ADD COLUMN IF NOT EXISTS `country` LowCardinality(String)",
        "DELETE FROM `db`.`events` WHERE identified = 1 AND visitor = {v:UInt64}",
    ]
    out = render(appended, "c1")
    assert out[0].startswith("CREATE TABLE IF NOT EXISTS `db`.`daily_local` ON CLUSTER `c1`")
    assert "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/daily_local', '{replica}')" in out[0]
    assert "TTL day + toIntervalMonth(25) DELETE" in out[0]
    assert out[1] == (
        "CREATE TABLE IF NOT EXISTS `db`.`daily` ON CLUSTER `c1` AS `db`.`daily_local` "
        "ENGINE = Distributed('c1', 'db', 'daily_local', rand())"
    )
    # Each shard's view reads the rows inserted there and writes its own replicated rollup.
    assert "ON CLUSTER `c1` TO `db`.`daily_local`" in out[2] and "FROM `db`.`events_local`" in out[2]
    # Reports read the whole cluster through the Distributed table.
    assert "ON CLUSTER `c1`" in out[3] and "FROM `db`.`daily` " in out[3]
    assert out[4] == "CREATE ROLE IF NOT EXISTS `marketing` ON CLUSTER `c1`"
    assert out[5] == "GRANT ON CLUSTER `c1` SELECT ON `db`.`report` TO `marketing`"
    assert out[6].startswith("ALTER TABLE `db`.`events_local` ON CLUSTER `c1` MODIFY TTL")
    assert out[7].startswith("ALTER TABLE `db`.`events_local` ON CLUSTER `c1` ADD COLUMN")
    assert out[8].startswith("ALTER TABLE `db`.`events` ON CLUSTER `c1` ADD COLUMN")
    assert out[9].startswith("DELETE FROM `db`.`events_local` ON CLUSTER `c1` WHERE")
    assert len(out) == 10


def test_appended_statements_parse(store: Store) -> None:
    out = render(
        [
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.`mv` TO `db`.`daily` AS SELECT 1 AS x FROM `db`.`events`",
            "CREATE ROLE IF NOT EXISTS `marketing`",
            "GRANT SELECT ON `db`.`report` TO `marketing`",
            "DELETE FROM `db`.`events` WHERE visitor = 1",
            "ALTER TABLE `db`.`events` MODIFY TTL toDateTime(ts) + toIntervalMonth(6) DELETE",
        ],
        "c1",
    )
    for sql in out:
        assert "ON CLUSTER c1" in parse(store, sql)


def test_single_node_migrations_run_for_real(store: Store) -> None:
    applied = migrate(store)
    assert applied == [version for version, _, _ in MIGRATIONS]
    assert migrate(store) == []  # idempotent
    engines = dict(
        store.query_rows(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": store.database}
        )
    )
    assert engines["events"] == "MergeTree" and engines["consent_receipts"] == "MergeTree"
    assert not any(name.endswith("_local") for name in engines)
    assert not any(engine.startswith(("Replicated", "Distributed")) for engine in engines.values())


def test_retention_change_is_applied_on_the_next_migrate(store: Store) -> None:
    migrate(store)
    migrate(store, events_months=6)
    ddl = store.query_rows(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'events'",
        {"db": store.database},
    )[0][0]
    assert "toIntervalMonth(6)" in ddl


def test_cluster_needs_a_server() -> None:
    with pytest.raises(SettingsError, match="cluster"):
        Settings(cluster="c1", clickhouse_url="chdb:///tmp/x")
    with pytest.raises(SettingsError, match="cluster"):
        Settings(cluster="bad name;", clickhouse_url="http://ch:8123")
    assert Settings(cluster="c1", clickhouse_url="http://ch:8123").cluster == "c1"


def test_the_parser_check_can_fail(store: Store) -> None:
    from consent_gateway import StoreError

    with pytest.raises(StoreError, match=r"SYNTAX_ERROR|Syntax error"):
        parse(store, "CREATE TABLE `db`.`t` ON CLUSTER ENGINE = Distributed(")
