# Minimal image; a later issue hardens it (non-root user, pinned digests, read-only root).
FROM python:3.11-slim
WORKDIR /srv/twokey
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir .
ENV HOST=0.0.0.0 PORT=3000
EXPOSE 3000
USER nobody
CMD ["twokey", "serve"]
