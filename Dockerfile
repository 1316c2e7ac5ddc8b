# twokey's container image: built in one stage, run from a slim one without build tools.
# Run it with a read-only root filesystem; TWOKEY_DATA_DIR (the execution journal) is a volume.

# ---- build: a wheel of twokey and of everything it needs --------------------------------
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
RUN python -m pip wheel --wheel-dir /wheels .

# ---- run: only the installed wheels, as a numeric non-root user -------------------------
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 PORT=3000 TWOKEY_DATA_DIR=/var/lib/twokey
COPY --from=build /wheels /wheels
RUN python -m pip install --no-index --find-links=/wheels twokey \
    && rm -rf /wheels \
    && mkdir -p /var/lib/twokey && chown 10001:10001 /var/lib/twokey
USER 10001:10001
WORKDIR /var/lib/twokey
VOLUME ["/var/lib/twokey"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '3000')}/healthz\", timeout=2)"]
CMD ["twokey", "serve"]
