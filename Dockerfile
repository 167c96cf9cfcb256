# The dispatcher's image: the `llmdispatch` CLI, which runs a worker, Flower or the mock vendor.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The packages first, then the config, so editing the config does not reinstall them.
COPY pyproject.toml README.md ./
COPY dispatcher/ dispatcher/
COPY workers/ workers/
COPY producer/ producer/
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 llmdispatch
COPY deploy/ deploy/

USER llmdispatch
ENTRYPOINT ["llmdispatch"]
CMD ["--help"]
