# The operator image: lightjob[operator] on slim Python. No torch; runs as a non-root user
# with a read-only root filesystem (the chart mounts /tmp).
#   docker build -f docker/operator.Dockerfile -t ghcr.io/lightjob/operator:0.1.0 .
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lightjob ./lightjob
RUN pip install ".[operator]" && cd / && rm -rf /src
USER 65532:65532
ENTRYPOINT ["lightjob"]
CMD ["operator", "--all-namespaces"]
