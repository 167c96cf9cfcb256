# The dispatcher's image: the `llmdispatch` CLI, which runs a worker, Flower or the mock vendor.
# Dependencies are installed exactly as uv.lock pins them (runtime only, no test or dev tools),
# with the `bedrock` extra (botocore) so Bedrock can sign with a container or instance role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/llmdispatch \
    UV_LINK_MODE=copy \
    PATH=/opt/llmdispatch/bin:$PATH

WORKDIR /app

# The locked dependencies first, then the packages, so editing the code does not reinstall
# them. uv is the version the Makefile pins. The configuration is not in the image:
# docker-compose.yml mounts it (LLMDISPATCH_CONFIG=/etc/llmdispatch/llmdispatch.yaml).
COPY pyproject.toml uv.lock README.md ./
RUN pip install --no-cache-dir 'uv==0.13.9' \
    && uv sync --locked --no-dev --extra bedrock --no-install-project --no-cache
COPY dispatcher/ dispatcher/
COPY workers/ workers/
COPY producer/ producer/
RUN uv sync --locked --no-dev --extra bedrock --no-editable --no-cache \
    && pip uninstall --yes uv \
    && useradd --create-home --uid 10001 llmdispatch

USER llmdispatch
ENTRYPOINT ["llmdispatch"]
CMD ["--help"]
