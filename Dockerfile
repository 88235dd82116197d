# The one image of every alpaca-broker service (docker-compose.yml): the producer, the Celery
# workers, Flower and the simulator. Python 3.11, the project and its runtime dependencies
# only (no test extras), run as an unprivileged user.
#
# Reproducible: the base image is pinned by its exact tag (a digest is better where it can be
# looked up: python:3.11.14-slim-bookworm@sha256:...), and every Python package, the build
# backend included, comes from a lock file with hashes (requirements/, `make lock`): pip
# refuses a package whose hash is not in the lock. Only the project's own wheel is unlocked.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build-lock.txt requirements/
RUN pip install --require-hashes -r requirements/build-lock.txt
COPY pyproject.toml README.md ./
COPY alpaca_broker/ alpaca_broker/
COPY celery_app/ celery_app/
COPY producers/ producers/
COPY tasks/ tasks/
COPY simulator/ simulator/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY requirements/lock.txt /tmp/lock.txt
RUN pip install --require-hashes -r /tmp/lock.txt && rm /tmp/lock.txt
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
WORKDIR /app
USER app
# Every service sets its own command (docker-compose.yml).
CMD ["alpaca-broker", "--help"]
