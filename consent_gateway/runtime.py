"""The services one gateway shares between its middleware and routes, and their lifecycle."""

from __future__ import annotations

import asyncio
import logging

from .banner import BannerRenderer
from .catalogue import Catalogue
from .clientip import TrustedProxies
from .consent import ConsentResolver, MajorInForce
from .cookies import ConsentCookie
from .errors import SettingsError, StoreError
from .pipeline import Journal, Pipeline, PipelineMetrics, Writer, WriterConfig
from .pipeline.periodic import Periodic
from .policy import Policy
from .pseudonymize import SaltStore
from .ratelimit import EventNameCap, RateLimits
from .registry import CategoryRegistry
from .rows import RowBuilder
from .settings import Settings
from .signing import ConsentCodec
from .store import Store, migrate, open_store
from .store.statements import stored_event_names

logger = logging.getLogger("consent_gateway")


def _cookie_registry(settings: Settings) -> CategoryRegistry:
    return CategoryRegistry(
        settings.cookie_registry,
        unknown_category=settings.unknown_cookie_category,
        fixed={settings.cookie_name: next(iter(sorted(settings.required_categories)))},
        # Well-known framework and vendor cookies, after the site's own registry.
        catalogue=Catalogue.load() if settings.cookie.catalogue else None,
        categories=settings.category_keys,
    )


def _event_registry(settings: Settings) -> CategoryRegistry:
    return CategoryRegistry(
        settings.event_registry,
        unknown_category=settings.unknown_event_category,
        label="event",
        section="events",
    )


def _rate_limits(settings: Settings) -> RateLimits:
    return RateLimits(
        collect_per_minute=settings.rate_limit_collect_per_minute,
        collect_burst=settings.rate_limit_collect_burst,
        consent_per_minute=settings.rate_limit_consent_per_minute,
        consent_burst=settings.rate_limit_consent_burst,
    )


class GatewayRuntime:
    """Built once per gateway from Settings; opened in lifespan startup, closed in shutdown."""

    def __init__(self, settings: Settings) -> None:
        _require_keys(settings)
        self.settings = settings
        self.codec = ConsentCodec(
            settings.secret_keys,
            max_age=settings.cookie_max_age_days * 86400,
            cache_size=settings.verify_cache_size,
        )
        self.cookies = _cookie_registry(settings)
        self.events = _event_registry(settings)
        self.policy = Policy(settings, self.events)
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
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.consent_cookie = ConsentCookie(
            settings.cookie_name,
            max_age=settings.cookie_max_age_days * 86400,
            domain=settings.cookie_domain,
            secure=settings.cookie_secure,
        )
        self.rate_limits = _rate_limits(settings)
        self.event_names = EventNameCap(settings.max_event_names, (n for n, _ in settings.event_registry))
        self.query_store: Store | None = None
        self._start_lock = asyncio.Lock()
        self.started = False
        # The MAJOR of the policy in force, for each request's consent (see MajorInForce).
        self.policy_major = MajorInForce(lambda day: settings.policy_in_force(day).major)
        self.consents = ConsentResolver(
            self.codec,
            required=self.required,
            known=self.known,
            gpc_refuses=self.gpc_refuses,
            policy_major=settings.policy.major,
            cache_size=settings.verify_cache_size,
        )

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
            names = stored_event_names(store, self.settings.site_id, int(self.settings.max_event_names) + 1)
        except StoreError as exc:
            logger.warning("could not read stored event names for the cap: %s", exc)
            return
        self.event_names.seed(names)

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

def _require_keys(settings: Settings) -> None:
    """Refuse settings without the keys a gateway needs, naming every missing one in one error."""
    env = {"secret_keys": "CONSENT_GATEWAY_SECRET_KEYS", "pseudonym_key": "CONSENT_GATEWAY_PSEUDONYM_KEY"}
    missing = [name for name in env if not getattr(settings, name)]
    if not missing:
        return
    # The first missing key is the error's key; the message names all of them.
    raise SettingsError(
        missing[0],
        getattr(settings, missing[0]),
        f"missing {' and '.join(f'{name} ({env[name]})' for name in missing)}; the signing keys and the "
        "pseudonymisation key are kept apart from the data. `consent-gateway init` writes both, "
        "`consent-gateway serve --local-keys` (or `demo --local-keys`) makes local ones for a trial, "
        "and `consent-gateway keys secret` prints one new key",
    )
