"""The services one gateway shares between its middleware and routes, and their lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from .banner import BannerRenderer
from .children import ChildGuard
from .clientip import TrustedProxies
from .cookies import ConsentCookie
from .errors import SettingsError, StoreError
from .inventory import (
    CatalogueLookup,
    Classifier,
    CookieInventory,
    cookie_registry,
    create_inventory_table,
    flush_inventory,
    gateway_cookies,
    installed_catalogue,
    no_catalogue,
    watch_unclassified,
)
from .pipeline import Journal, Pipeline, PipelineMetrics, Writer, WriterConfig
from .pipeline.periodic import Periodic
from .policy import Policy
from .pseudonymize import SaltStore
from .ratelimit import EventNameCap, RateLimits
from .registry import CategoryRegistry
from .resolver import ConsentResolver, MajorInForce
from .revocation import Revocations
from .rows import RowBuilder
from .settings import Settings
from .signing import ConsentCodec, Verified
from .store import Store, migrate, open_store
from .store.statements import stored_event_names
from .store.visits import VISIT_BUILD_INTERVAL, build_closed_days, build_open_days

logger = logging.getLogger("consent_gateway")
# How often the cookie inventory's counts are written (and once more when the gateway stops).
INVENTORY_FLUSH_INTERVAL = 60.0


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
        page_per_minute=settings.rate_limit_page_per_minute,
        page_burst=settings.rate_limit_page_burst,
    )


def _codec(settings: Settings, revocations: Revocations) -> ConsentCodec:
    return ConsentCodec(
        settings.secret_keys,
        max_age=settings.cookie_max_age_days * 86400,
        cache_size=settings.verify_cache_size,
        site_id=settings.site_id,
        revocations=revocations,
        accept_unbound=settings.cookie_accept_unbound,
    )


class GatewayRuntime:
    """Built once per gateway from Settings; opened in lifespan startup, closed in shutdown."""

    def __init__(self, settings: Settings) -> None:
        _require_keys(settings)
        self.settings = settings
        # Withdrawn and erased consent ids, shared by the workers of this host (and `consent-gateway erase`).
        self.revocations = Revocations(settings.keys_dir / REVOKED_FILE, max_age=settings.cookie_max_age_days * 86400)
        self.codec = _codec(settings, self.revocations)
        # The consent cookie's name as browsers send it back ("__Host-" prefixed when configured):
        # the name read from requests, set, deleted and fixed as necessary in the registry.
        self.cookie_name = settings.consent_cookie_name
        catalogue = installed_catalogue() if settings.cookie.catalogue else no_catalogue
        self.cookies = cookie_registry(settings, catalogue)
        self.events = _event_registry(settings)
        self.policy = Policy(settings, self.events)
        self.salts = SaltStore(settings.keys_dir)
        metrics = PipelineMetrics()
        self.rows = RowBuilder(settings, self.salts, on_props_dropped=metrics.props_dropped.inc)
        self.banner = BannerRenderer(settings, self.cookies)
        self.pipeline = Pipeline(
            self._new_writer,
            queue_max=settings.queue_max,
            visit_shed_fraction=settings.visit_shed_fraction,
            ack_timeout=settings.collect_ack_timeout,
            metrics=metrics,
        )
        self._salt_janitor: Periodic | None = None
        self._visit_builder: Periodic | None = None
        self.required = settings.required_categories
        self.known = frozenset(settings.category_keys)
        self.gpc_refuses = frozenset(settings.gpc_refuses)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.consent_cookie = ConsentCookie(
            self.cookie_name,
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
        self.inventory = self._new_inventory(catalogue)
        # Children under 14 marked by the app: behavioural categories refused (children.py).
        self.child_guard = ChildGuard(settings)

    def _new_inventory(self, catalogue: CatalogueLookup) -> CookieInventory:
        # Every cookie name the site sets or gets back, counted by the middleware as it enforces.
        # It classifies with the registry that enforces: one set of rules, one cache.
        inventory = CookieInventory(
            Classifier.over(self.cookies, catalogue=catalogue, fixed=gateway_cookies(self.settings))
        )
        watch_unclassified(inventory, self.pipeline.metrics.registry)
        self.inventory_flush_interval = INVENTORY_FLUSH_INTERVAL
        self._inventory_writer: Periodic | None = None
        self._inventory_table = False  # made (or found) by the first write
        return inventory

    def __repr__(self) -> str:
        return f"GatewayRuntime(site={self.settings.site_id!r}, started={self.started})"

    def reissue_header(self, verified: Verified, now: float | None = None) -> bytes | None:
        """The Set-Cookie that moves a cookie signed with an older key to the newest one, keeping
        its original signing time and so its expiry: ``Max-Age`` is the time it has left."""
        left = verified.expires_at(self.codec.max_age) - int(time.time() if now is None else now)
        if left <= 0:
            return None
        return dataclasses.replace(self.consent_cookie, max_age=left).header(self.codec.reissue(verified))

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
        # Entries older than one cookie max age revoke nothing any more (those cookies have expired).
        try:
            self.revocations.compact()
        except OSError as exc:
            logger.warning("could not compact the revocation list %s: %s", self.revocations.path, exc)
        self.revocations.refresh()
        self._seed_event_names()
        self.pipeline.start()
        # Salts older than 48 h are destroyed while the gateway runs, not only at start.
        self._salt_janitor = Periodic("salt-janitor", self.salts.destroy_expired, s.salt_check_interval)
        self._salt_janitor.start()
        # Visits of closed days are stored off the request path; queries never depend on it.
        self._visit_builder = Periodic("visit-builder", self._build_visits, VISIT_BUILD_INTERVAL)
        self._visit_builder.start()
        self._inventory_writer = Periodic(
            "cookie-inventory", self.flush_inventory, self.inventory_flush_interval, at_once=False
        )
        self._inventory_writer.start()
        logger.info("consent gateway started for site %r on %r", s.site_id, self.query_store)
        # Said under every server (uvicorn, gunicorn, hypercorn, the test client): only
        # trusted_proxies decides whose X-Forwarded-For is believed.
        logger.info(proxy_trust_line(s.trusted_proxies))

    def store(self) -> Store:
        """The query client, connecting now if ClickHouse was unreachable at start (blocking)."""
        if self.query_store is None:
            self.query_store = open_store(self.settings.clickhouse_dsn, self.settings.database)
        return self.query_store

    def flush_inventory(self) -> int:
        """Write the cookie inventory's counts gathered so far (blocking); returns the rows written.

        Without ClickHouse the counts wait in memory, within the inventory's bounds."""
        store = self.store()
        if not self._inventory_table:
            create_inventory_table(store, events_months=self.settings.events_retention_months)
            self._inventory_table = True
        return flush_inventory(store, self.inventory, self.settings.site_id)

    def _build_visits(self) -> None:
        store = self.query_store
        if store is not None:
            build_closed_days(
                store,
                events_months=self.settings.events_retention_months,
                cluster=self.settings.cluster,
                keep_going=lambda: self._visit_builder is not None,
            )
            if self._visit_builder is not None:
                build_open_days(store, cluster=self.settings.cluster)

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
        builder, self._visit_builder = self._visit_builder, None  # a build in progress stops after its day
        if builder is not None:
            builder.stop()
        writer, self._inventory_writer = self._inventory_writer, None
        if writer is not None:
            writer.stop()
        try:
            await asyncio.to_thread(self.flush_inventory)
        except Exception:
            logger.exception("the cookie inventory could not be written at shutdown; its counts are lost")
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


REVOKED_FILE = "revoked.txt"


def proxy_trust_line(trusted_proxies: tuple[str, ...]) -> str:
    """What the gateway believes about the client address, said once at start."""
    if trusted_proxies:
        return (
            f"proxy trust: X-Forwarded-For is believed only from {', '.join(trusted_proxies)} "
            "(trusted_proxies); every other client is its socket address"
        )
    return (
        "proxy trust: none; the client address is the socket peer and X-Forwarded-For is ignored "
        "(set trusted_proxies to the addresses of your reverse proxies)"
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
