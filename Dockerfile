# syntax=docker/dockerfile:1
#
# budget-exporter container image.
#
#   docker build -t budget-exporter .
#   docker run --rm -p 9820:9820 budget-exporter            # demo config, no credentials
#   docker run --rm -p 9820:9820 -v "$PWD/my.yml:/etc/budget-exporter/budget-exporter.yml:ro" budget-exporter
#
# Stage 1 builds wheels for the exporter and all its dependencies (including the
# provider extras); stage 2 installs them into a venv on a clean base, so no
# compiler, build backend or source tree ends up in the final image.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# Extras baked into the image (providers, and redis for shared holds); build with
# --build-arg EXTRAS=aws for a smaller one.
ARG EXTRAS=aws,gcp,azure,redis

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter/ exporter/

# Every wheel the image needs, then a lock file pinning each of them exactly. Where a proxy
# re-signs TLS, pass its CA bundle as a build secret (never a layer):
#   docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt .
# "python3", not "python": the same file builds on a Debian base with Debian's Python.
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && pip wheel --wheel-dir /wheels ".[${EXTRAS}]" \
 && python3 -c "import pathlib; d = pathlib.Path('/wheels'); \
names = sorted('=='.join(w.name.split('-')[:2]) for w in d.glob('*.whl')); \
(d / 'requirements.txt').write_text(''.join(n + chr(10) for n in names))"


FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.2.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="budget-exporter" \
      org.opencontainers.image.description="Prometheus exporter for spend against budgets across clouds, LLM APIs and metered SaaS APIs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/budget-exporter/budget-exporter" \
      org.opencontainers.image.documentation="https://github.com/budget-exporter/budget-exporter#readme" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PATH=/opt/budget-exporter/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The venv has no pip of its own: the base image's pip installs into it, offline,
# exactly the wheels locked in stage 1 (bind-mounted, so they never become a layer).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv --without-pip /opt/budget-exporter \
 && pip --python /opt/budget-exporter/bin/python install \
        --no-index --no-cache-dir --disable-pip-version-check --find-links=/wheels \
        --requirement /wheels/requirements.txt \
 && groupadd --system --gid 10001 budget-exporter \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin budget-exporter

# The default configuration (CMD's --config.file): it runs with no credentials and
# no network; mount your own file over it. The Helm chart leaves it alone: it
# mounts its ConfigMap on /etc/budget-exporter/config/ and passes
# --config.file=/etc/budget-exporter/config/budget-exporter.yml in the
# container's args, which replace this CMD.
COPY examples/demo.yml /etc/budget-exporter/budget-exporter.yml

USER 10001:10001
EXPOSE 9820

ENTRYPOINT ["budget-exporter"]
CMD ["--config.file=/etc/budget-exporter/budget-exporter.yml", "--web.listen-address=:9820"]
