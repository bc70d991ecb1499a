# The Modelship serving runtime: `modelship serve` on LiteRT (TFLite), no TensorFlow. Model images are
# built FROM it (modelship/build/context.py); with the build disabled it serves from the artifact volume.
#
#   docker build --network host -f operator/images/serving.Dockerfile -t modelship/serving:0.1.0 \
#     [--build-arg BASE_IMAGE=modelship/base:bookworm-py311] .
#
# Only the [serve] extra plus the few core dependencies the server imports: the operator's kopf and
# kubernetes client (~130 MB) have no business in every model image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# EXTRA_CA_CERTS: PEM text of extra CAs pip must trust (a TLS-intercepting egress proxy); builder only,
# never in the final image. hack/images/build-all passes /usr/local/share/ca-certificates/*.crt.
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PIP_CERT=/tmp/pip-ca.pem
RUN cat /etc/ssl/certs/ca-certificates.crt > /tmp/pip-ca.pem \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/pip-ca.pem; fi \
 && python3 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade "pip>=24" "setuptools>=69" wheel
WORKDIR /src
COPY pyproject.toml operator/images/requirements.py /src/
RUN python3 requirements.py pyproject.toml --extra serve --no-core --core-only pydantic --core-only PyYAML \
      > requirements.txt \
 && /opt/venv/bin/pip install -r requirements.txt
COPY operator/modelship /src/operator/modelship
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation /src \
 && /opt/venv/bin/modelship serve --help >/dev/null \
 && /opt/venv/bin/pip uninstall -y pip setuptools wheel \
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests -exec rm -rf {} + \
 && /opt/venv/bin/python -c "import numpy, ai_edge_litert.interpreter, orjson, httptools, modelship.serve.server"

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 65532 modelship \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/modelship --create-home --shell /usr/sbin/nologin modelship
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
LABEL org.opencontainers.image.title="modelship-serving" \
      org.opencontainers.image.description="Modelship serving runtime: TF Serving REST and Open Inference Protocol v2 on LiteRT" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65532:65532
WORKDIR /home/modelship
EXPOSE 8080
ENTRYPOINT ["modelship"]
CMD ["serve", "--help"]
