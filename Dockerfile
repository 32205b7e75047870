# consent-gateway: the consent gateway (and its analytics app) as one image.
#   docker build -t consent-gateway .
#   docker run -e CONSENT_GATEWAY_SECRET_KEYS=... -e CONSENT_GATEWAY_PSEUDONYM_KEY=... -p 8000:8000 consent-gateway
# Configuration is by CONSENT_GATEWAY_* variables (docs/configuration.md) and an optional TOML file
# at $CONSENT_GATEWAY_CONFIG; see docs/deployment.md.

# The interpreter the test suite runs on; bump the patch release here and in CI together.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# -- build: a virtualenv with the locked dependencies, then the package ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the lock alone: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-virtualenv -r requirements.lock
# Then the source. --no-deps: everything it needs is installed above, at the locked versions.
COPY pyproject.toml README.md ./
COPY static ./static
COPY consent_gateway ./consent_gateway
RUN pip install --no-cache-dir --no-deps --require-virtualenv . \
    && consent-gateway --help > /dev/null

# -- runtime: the virtualenv only, run by an unprivileged user ----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    CONSENT_GATEWAY_CONFIG=/etc/consent-gateway/consent.toml \
    CONSENT_GATEWAY_DATA_DIR=/var/lib/consent-gateway \
    CONSENT_GATEWAY_LOG_FORMAT=json
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/consent-gateway \
       --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/consent-gateway /etc/consent-gateway \
    && chown gateway:gateway /var/lib/consent-gateway \
    && chmod 0700 /var/lib/consent-gateway
COPY --from=build /opt/venv /opt/venv
# The demo site's settings (cookie registry, events). Mount your own file over it for your site.
COPY consent_gateway/demo/demo.toml /etc/consent-gateway/consent.toml
USER 10001:10001
WORKDIR /var/lib/consent-gateway
# Journal, daily salts and (with chdb:// only) the embedded ClickHouse live here: keep it on a volume.
VOLUME ["/var/lib/consent-gateway"]
EXPOSE 8000
# uvicorn handles SIGTERM: it stops accepting, finishes requests, and the lifespan shutdown flushes
# the pipeline (bounded by shutdown_timeout). Give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s%s/healthz' % (os.environ.get('PORT', '8000'), os.environ.get('CONSENT_GATEWAY_PREFIX', '/_consent')), timeout=4)"]
# Exec form: consent-gateway is PID 1 and receives SIGTERM itself (no shell in between).
# `serve` runs uvicorn without its proxy-header handling: only CONSENT_GATEWAY_TRUSTED_PROXIES decides
# whose X-Forwarded-For is believed. Do not add --proxy-headers or FORWARDED_ALLOW_IPS here.
ENTRYPOINT ["consent-gateway"]
CMD ["serve", "consent_gateway.demo:create_demo_app", "--factory", "--host", "0.0.0.0"]
