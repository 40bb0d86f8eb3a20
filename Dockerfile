# The auditcov sink as a container:
#   docker build -t auditcov:0.1.0 .
#   docker run -p 8080:8080 -v auditcov-data:/data auditcov:0.1.0
# Settings: the file /etc/auditcov/sink.toml (mount your own over it: -v $PWD/sink.toml:/etc/auditcov/sink.toml:ro),
# AUDITCOV_<KEY> environment variables, which win over the file (-e AUDITCOV_KEEP_BODIES=true), and flags after
# the image's name, which win over both. Mount certificates and token files under /etc/auditcov and name them
# there. The store is /data/auditcov.db, on the volume /data. config/deploy runs this image in a cluster.

# Build: a wheel of auditcov, wheels of its dependencies, and a virtual environment installed from those wheels
# alone (no index), without pip; only that environment goes into the image.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY merge ./merge
COPY sink ./sink
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/auditcov \
 && pip --python /opt/auditcov/bin/python install --no-cache-dir --no-index --find-links /wheels \
        /wheels/auditcov-*.whl

FROM python:3.11-slim-bookworm
# A fixed unprivileged user (config/deploy runs it as 10001 too), owning the store's volume.
RUN groupadd --system --gid 10001 auditcov \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data auditcov \
 && mkdir /data \
 && chown 10001:10001 /data
COPY --from=build /opt/auditcov /opt/auditcov
# The sink's defaults, and the operator's files its start-up banner shows (see sink/operatorfiles.py).
COPY config/sink.toml config/policy.yaml config/policy-endpoints.yaml config/webhook.kubeconfig \
     config/webhook-mtls.kubeconfig /etc/auditcov/
ENV PATH=/opt/auditcov/bin:$PATH \
    AUDITCOV_LISTEN=0.0.0.0:8080 \
    AUDITCOV_DB=/data/auditcov.db
USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# Asks /healthz where the same file and environment say the sink listens.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["python", "-m", "auditcov.sink.healthcheck", "/etc/auditcov/sink.toml"]
ENTRYPOINT ["auditcov", "serve"]
CMD ["--config", "/etc/auditcov/sink.toml"]
