# The one image of every alpaca-broker service (docker-compose.yml): the producer, the Celery
# workers, Flower and the simulator. Python 3.11, the project and its runtime dependencies
# only (no test extras), run as an unprivileged user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY alpaca_broker/ alpaca_broker/
COPY celery_app/ celery_app/
COPY producers/ producers/
COPY tasks/ tasks/
COPY simulator/ simulator/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# Flower loads ./flowerconfig.py: loopback by default, no task events forced on workers.
COPY flowerconfig.py ./
USER app
# Every service sets its own command (docker-compose.yml).
CMD ["alpaca-broker", "--help"]
