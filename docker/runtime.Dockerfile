# The training image: CUDA PyTorch with lightjob[runtime], and this repository (the examples)
# in /app. Runs as a non-root user. The base already has torch, so pip keeps it.
#   docker build -f docker/runtime.Dockerfile -t ghcr.io/lightjob/runtime:0.1.0 .
FROM pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY . /app
RUN pip install "/app[runtime]" scikit-learn \
    && useradd --uid 1000 --create-home trainer \
    && chown -R trainer /app
USER 1000:1000
