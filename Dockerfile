# Switchboard as a container: `docker build -t switchboard .`, then for example
# `docker run --env-file .env -p 9100:9100 switchboard discord` (README: "Running it as a service").
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install . \
    && useradd --system --create-home --uid 10001 switchboard \
    && mkdir /data \
    && chown switchboard /data

USER switchboard
WORKDIR /data
ENV BOT_DATABASE=/data/switchboard.db \
    BOT_SHOP_DATABASE=/data/shop.db \
    BOT_LOG_FORMAT=json \
    BOT_METRICS_PORT=9100
VOLUME /data
# 3000: Slack's HTTP events (PORT); 9100: /metrics, /healthz and /readyz (BOT_METRICS_PORT).
EXPOSE 3000 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BOT_METRICS_PORT', '9100'), timeout=3)"]

ENTRYPOINT ["switchboard"]
CMD ["slack"]
