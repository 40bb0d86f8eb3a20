# The auditcov sink as a container: `docker build -t auditcov .` then
#   docker run -p 8080:8080 -v auditcov-data:/data auditcov
# Mount certificates and token files under /etc/auditcov and name them in sink.toml or with flags.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY merge ./merge
COPY sink ./sink
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/auditcov-*.whl

FROM python:3.11-slim-bookworm
# A fixed unprivileged user owns the store's volume.
RUN useradd --system --uid 10001 --home-dir /data --create-home auditcov
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/auditcov-*.whl \
 && rm -rf /wheels
COPY config/sink.toml /etc/auditcov/sink.toml
USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["auditcov"]
CMD ["serve", "--config", "/etc/auditcov/sink.toml", "--listen", "0.0.0.0:8080", "--db", "/data/auditcov.db"]
