# The Modelship serving runtime: `modelship serve` on LiteRT (TFLite), no TensorFlow. Model images are
# built FROM it (modelship/build/context.py); with the build disabled it serves from the artifact volume.
#
#   docker build --network host -f operator/images/serving.Dockerfile -t modelship/serving:0.1.0 \
#     [--build-arg BASE_IMAGE=modelship/base:bookworm-py311] .
#
# Only the [serve] extra plus the few core dependencies the CLI imports: the operator's kopf and
# kubernetes client (~130 MB) have no business in every model image.
ARG BASE_IMAGE=python:3.11-slim

# The dependency list alone: edits elsewhere in pyproject.toml (tool settings, version) leave the
# requirements file, and so the pip layer below, unchanged and cached.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml operator/images/requirements.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml --extra serve --no-core --core-only pydantic --core-only PyYAML \
      > /requirements.txt

# native: libmsjson (large JSON requests' tensors read without the GIL), compiled on this base so it matches its
# C library; its simdjson sources come from PyPI's pysimdjson sdist (pinned in native/msjson/build). Only the .so
# reaches the final image (it needs nothing but libc); without it the server uses pysimdjson.
FROM ${BASE_IMAGE} AS native
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PIP_DEFAULT_TIMEOUT=120 \
    PIP_CERT=/tmp/pip-ca.pem DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends g++ binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && cat /etc/ssl/certs/ca-certificates.crt > /tmp/pip-ca.pem \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/pip-ca.pem; fi \
 && python3 -m venv /opt/tools && /opt/tools/bin/pip install --quiet --upgrade "pip>=24"
COPY native/msjson /src/native/msjson
RUN MODELSHIP_CACHE=/tmp/cache bash /src/native/msjson/build --python /opt/tools/bin/python --dest /opt/msjson/libmsjson.so \
 && rm -rf /tmp/cache

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
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests -exec rm -rf {} + \
 && echo /opt/modelship > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/modelship.pth" \
 && printf '#!/opt/venv/bin/python\nimport sys\nfrom modelship.cli import main\nsys.exit(main())\n' > /opt/venv/bin/modelship \
 && chmod 755 /opt/venv/bin/modelship
COPY pyproject.toml /src/
COPY operator/modelship /src/operator/modelship
RUN /opt/tools/bin/pip install --no-deps --no-build-isolation --no-compile --target /opt/modelship /src \
 && rm -rf /opt/modelship/bin \
 && /opt/venv/bin/python -m compileall -q /opt/modelship \
 && /opt/venv/bin/modelship serve --help >/dev/null \
 && /opt/venv/bin/python -c "import numpy, ai_edge_litert.interpreter, orjson, httptools, modelship.serve.server"

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 65532 modelship \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/modelship --create-home --shell /usr/sbin/nologin modelship
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/modelship /opt/modelship
# where modelship.serve.nativejson looks: <sys.prefix>/lib/modelship/libmsjson.so
COPY --from=native /opt/msjson/libmsjson.so /opt/venv/lib/modelship/libmsjson.so
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
LABEL org.opencontainers.image.title="modelship-serving" \
      org.opencontainers.image.description="Modelship serving runtime: TF Serving REST and Open Inference Protocol v2 on LiteRT" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65532:65532
WORKDIR /home/modelship
EXPOSE 8080 9090
ENTRYPOINT ["modelship"]
CMD ["serve", "--help"]
