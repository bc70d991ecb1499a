# The Modelship optimizer (the optimization Job's image): TensorFlow + tf-keras + TFMOT + LiteRT, pinned
# by pyproject.toml's [optimize] extra, with TF_USE_LEGACY_KERAS=1 so tf.keras is Keras 2 (TFMOT needs it).
# It is also the TensorFlow-capable serving runtime (images.servingTensorflow): a SavedModel export's model
# image is built FROM it, so it carries the [serve] extra's dependencies too (orjson, uvloop, httptools...).
#
#   docker build --network host -f operator/images/optimizer.Dockerfile -t modelship/optimizer:0.1.0 \
#     [--build-arg BASE_IMAGE=modelship/base:bookworm-py311] .
ARG BASE_IMAGE=python:3.11-slim

# The dependency list alone: edits elsewhere in pyproject.toml (tool settings, version) leave the
# requirements file, and so the pip layer below, unchanged and cached.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml operator/images/requirements.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml --extra optimize \
      > /requirements.txt \
 && python3 /src/requirements.py /src/pyproject.toml --extra serve --no-core > /serve-requirements.txt

# builder: /opt/venv gets the dependencies only (no pip in it); Modelship's own code goes to /opt/modelship
# (found through a .pth file), so a code change rebuilds one small layer, never the dependency layer.
# pip itself lives in /opt/tools and never reaches the final image.
FROM ${BASE_IMAGE} AS builder
# EXTRA_CA_CERTS: PEM text of extra CAs pip must trust (a TLS-intercepting egress proxy); builder only,
# never in the final image. hack/images/build-all passes /usr/local/share/ca-certificates/*.crt.
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1 \
    PIP_DEFAULT_TIMEOUT=120 PIP_CERT=/tmp/pip-ca.pem
RUN cat /etc/ssl/certs/ca-certificates.crt > /tmp/pip-ca.pem \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/pip-ca.pem; fi \
 && python3 -m venv /opt/tools && /opt/tools/bin/pip install --upgrade "pip>=24" "setuptools>=69" wheel \
 && python3 -m venv --without-pip /opt/venv
COPY --from=requirements /requirements.txt /src/requirements.txt
RUN /opt/tools/bin/pip --python /opt/venv/bin/python install -r /src/requirements.txt \
 && echo /opt/modelship > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/modelship.pth" \
 && printf '#!/opt/venv/bin/python\nimport sys\nfrom modelship.cli import main\nsys.exit(main())\n' > /opt/venv/bin/modelship \
 && chmod 755 /opt/venv/bin/modelship
# the serving runtime's dependencies in their own small layer after TensorFlow's: adding or bumping one of
# them never re-downloads TensorFlow (the layer above stays cached)
COPY --from=requirements /serve-requirements.txt /src/serve-requirements.txt
RUN /opt/tools/bin/pip --python /opt/venv/bin/python install -r /src/requirements.txt -r /src/serve-requirements.txt
COPY pyproject.toml /src/
COPY operator/modelship /src/operator/modelship
RUN /opt/tools/bin/pip install --no-deps --no-build-isolation --no-compile --target /opt/modelship /src \
 && rm -rf /opt/modelship/bin \
 && /opt/venv/bin/python -m compileall -q /opt/modelship \
 && /opt/venv/bin/modelship --version \
 && /opt/venv/bin/modelship serve --help >/dev/null \
 && /opt/venv/bin/python -c "import ai_edge_litert.interpreter, orjson, httptools, uvloop, modelship.serve.server"

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 65532 modelship \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/modelship --create-home --shell /usr/sbin/nologin modelship
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/modelship /opt/modelship
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 \
    TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg MPLCONFIGDIR=/tmp/matplotlib
LABEL org.opencontainers.image.title="modelship-optimizer" \
      org.opencontainers.image.description="Modelship optimizer: TensorFlow/Keras model optimization behind an accuracy gate; serving runtime of SavedModel exports" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65532:65532
WORKDIR /home/modelship
EXPOSE 8080 9090
ENTRYPOINT ["modelship"]
CMD ["optimize", "--help"]
