"""The services one gateway shares between its middleware and routes, and their lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import time
from collections.abc import Mapping
from typing import Any

from .banner import BannerRenderer
from .consent import Consent, resolve
from .errors import SettingsError, StoreError
from .pipeline import Journal, Pipeline, PipelineMetrics, Writer, WriterConfig
from .pipeline.periodic import Periodic
from .policy import Policy
from .pseudonymize import SaltStore
from .ratelimit import EventNameCap, RateLimits
from .registry import CategoryRegistry
from .rows import RowBuilder
from .settings import Settings
from .signing import ConsentCodec, Verified
from .store import Store, migrate, open_store

logger = logging.getLogger("consent_gateway")


class GatewayRuntime:
    """Built once per gateway from Settings; opened in lifespan startup, closed in shutdown."""

    def __init__(self, settings: Settings) -> None:
        if not settings.secret_keys:
            raise SettingsError(
                "secret_keys", (), "give at least one signing key (CONSENT_GATEWAY_SECRET_KEYS); "
                "`consent-gateway keys secret` prints a new one"
            )
        if not settings.pseudonym_key:
            raise SettingsError(
                "pseudonym_key", "", "give a pseudonymisation key kept apart from the data "
                "(CONSENT_GATEWAY_PSEUDONYM_KEY); `consent-gateway keys secret` prints a new one"
            )
        self.settings = settings
        self.codec = ConsentCodec(
            settings.secret_keys,
            max_age=settings.cookie_max_age_days * 86400,
            cache_size=settings.verify_cache_size,
        )
        self.cookies = CategoryRegistry(
            settings.cookie_registry,
            unknown_category=settings.unknown_cookie_category,
            fixed={settings.cookie_name: next(iter(sorted(settings.required_categories)))},
        )
        self.events = CategoryRegistry(
            settings.event_registry,
            unknown_category=settings.unknown_event_category,
            label="event",
            section="events",
        )
        self.policy = Policy(settings)
        self.salts = SaltStore(settings.keys_dir)
        self.rows = RowBuilder(settings, self.salts)
        self.banner = BannerRenderer(settings, self.cookies)
        self.pipeline = Pipeline(
            self._new_writer,
            queue_max=settings.queue_max,
            visit_shed_fraction=settings.visit_shed_fraction,
            ack_timeout=settings.collect_ack_timeout,
            metrics=PipelineMetrics(),
        )
        self._salt_janitor: Periodic | None = None
        self.required = settings.required_categories
        self.known = frozenset(settings.category_keys)
        self.gpc_refuses = frozenset(settings.gpc_refuses)
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in settings.trusted_proxies)
        self.rate_limits = RateLimits(
            collect_per_minute=settings.rate_limit_collect_per_minute,
            collect_burst=settings.rate_limit_collect_burst,
            consent_per_minute=settings.rate_limit_consent_per_minute,
            consent_burst=settings.rate_limit_consent_burst,
        )
        self.event_names = EventNameCap(settings.max_event_names, (n for n, _ in settings.event_registry))
        self.query_store: Store | None = None
        self._start_lock = asyncio.Lock()
        self.started = False
        self._policy_until = 0.0  # epoch seconds of the next UTC midnight, when the lookup is redone
        self._policy_major = settings.policy.major
        # Consent values are immutable, so requests with the same verified cookie can share one.
        self._no_choice = {
            gpc: resolve(
                None,
                required=self.required,
                known=self.known,
                policy_major=self._policy_major,
                gpc=gpc,
                gpc_refuses=self.gpc_refuses,
            )
            for gpc in (False, True)
        }
        self._resolved: dict[tuple[int, bool, int], tuple[Verified, Consent]] = {}
        self._resolved_max = max(1, settings.verify_cache_size)

    def __repr__(self) -> str:
        return f"GatewayRuntime(site={self.settings.site_id!r}, started={self.started})"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self.started:
                return
            await asyncio.to_thread(self._start_sync)
            self.started = True

    def _start_sync(self) -> None:
        s = self.settings
        if s.embedded:
            s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.migrate_at_start:
            self.query_store = open_store(s.clickhouse_dsn, s.database)
        else:
            try:
                self.query_store = open_store(s.clickhouse_dsn, s.database)
            except StoreError as exc:
                # Pages and consent do not need ClickHouse: serve them, journal the records, report
                # not-ready, and connect once ClickHouse answers.
                logger.warning("ClickHouse is unreachable at start; records wait in the journal: %s", exc)
        if s.migrate_at_start and self.query_store is not None:
            migrate(
                self.query_store,
                events_months=s.events_retention_months,
                receipts_years=s.receipts_retention_years,
                cluster=s.cluster,
            )
        self.salts.destroy_expired()
        self._seed_event_names()
        self.pipeline.start()
        # Salts older than 48 h are destroyed while the gateway runs, not only at start.
        self._salt_janitor = Periodic("salt-janitor", self.salts.destroy_expired, s.salt_check_interval)
        self._salt_janitor.start()
        logger.info("consent gateway started for site %r on %r", s.site_id, self.query_store)

    def store(self) -> Store:
        """The query client, connecting now if ClickHouse was unreachable at start (blocking)."""
        if self.query_store is None:
            self.query_store = open_store(self.settings.clickhouse_dsn, self.settings.database)
        return self.query_store

    def _seed_event_names(self) -> None:
        # The cap counts names already stored, so a restart does not open it again.
        store = self.query_store
        if store is None:
            return
        try:
            rows = store.query_rows(
                f"SELECT DISTINCT name FROM {store.table('events')} WHERE site = {{site:String}} AND kind = 'event' "  # noqa: S608
                f"LIMIT {int(self.settings.max_event_names) + 1}",
                {"site": self.settings.site_id},
            )
        except StoreError as exc:
            logger.warning("could not read stored event names for the cap: %s", exc)
            return
        self.event_names.seed(str(r[0]) for r in rows)

    async def stop(self) -> None:
        if not self.started:
            return
        finished = await asyncio.to_thread(self.pipeline.stop, self.settings.shutdown_timeout)
        if not finished:
            logger.error("the writer did not finish within %.1fs", self.settings.shutdown_timeout)
        if self._salt_janitor is not None:
            self._salt_janitor.stop()
            self._salt_janitor = None
        if self.query_store is not None:
            self.query_store.close()
        self.started = False

    def _new_writer(self, pipeline: Pipeline) -> Writer:
        s = self.settings
        journal, recovered = (None, None)
        if s.journal_enabled:
            journal, recovered = Journal.open(s.journal_root, segment_bytes=s.journal_segment_bytes)
        return Writer(
            pipeline.queue,
            connect=lambda: open_store(s.clickhouse_dsn, s.database),
            rows=self.rows,
            config=WriterConfig.from_settings(s),
            journal=journal,
            recovered=recovered,
            metrics=pipeline.metrics,
            state=pipeline.state,
            taken=pipeline.taken,
            visits=pipeline.visits,
            visits_taken=pipeline.visits_taken,
        )

    # -- per request ----------------------------------------------------------------------

    def policy_major(self) -> int:
        """MAJOR of the policy in force; looked up once per UTC day since it changes at most daily."""
        # One float comparison per request; the date arithmetic runs once a day.
        if time.time() >= self._policy_until:
            now = dt.datetime.now(dt.UTC)
            self._policy_major = self.settings.policy_in_force(now.date()).major
            midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
            self._policy_until = midnight.timestamp()
        return self._policy_major

    def consent_for(
        self, cookie_value: str | None, gpc: bool, policy_major: int, alternatives: tuple[str, ...] = ()
    ) -> tuple[Consent, Verified | None]:
        verified = self.codec.decode(cookie_value) if cookie_value else None
        for other in alternatives:
            # Several consent cookies: the newest valid choice is the visitor's current one.
            candidate = self.codec.decode(other)
            if candidate is not None and (verified is None or candidate.record.issued_at > verified.record.issued_at):
                verified = candidate
        if verified is None:
            return self._no_choice[gpc], None
        # The codec hands out one Verified per cached cookie, so a returning visitor's consent is
        # resolved once; the entry keeps its Verified alive, so the id cannot be reused meanwhile.
        key = (id(verified), gpc, policy_major)
        entry = self._resolved.get(key)
        if entry is not None and entry[0] is verified:
            return entry[1], verified
        consent = resolve(
            verified.record,
            required=self.required,
            known=self.known,
            policy_major=policy_major,
            gpc=gpc,
            gpc_refuses=self.gpc_refuses,
        )
        resolved = self._resolved
        if len(resolved) >= self._resolved_max:
            del resolved[next(iter(resolved))]  # the oldest entry
        resolved[key] = (verified, consent)
        return consent, verified

    def client_ip(self, scope: Mapping[str, Any], forwarded_for: str) -> str:
        client = scope.get("client")
        ip = client[0] if client else ""
        if not self.trusted or not forwarded_for or not self._is_trusted(ip):
            return ip
        # Walk right to left past our own proxies; the first untrusted hop is the visitor.
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not self._is_trusted(hop):
                return hop
        return ip

    def _is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def consent_cookie_header(self, value: str) -> bytes:
        s = self.settings
        parts = [
            f"{s.cookie_name}={value}",
            f"Max-Age={s.cookie_max_age_days * 86400}",
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if s.cookie_domain:
            parts.append(f"Domain={s.cookie_domain}")
        if s.cookie_secure:
            parts.append("Secure")
        return "; ".join(parts).encode("latin-1")
