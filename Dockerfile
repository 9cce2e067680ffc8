# ecs-cluster-manager: keeps the desiredCount of ECS services equal to the
# number of usable container instances. Configured only through environment
# variables (CLUSTER, SERVICES, AWS_REGION, ...); arguments go to run.py.

# The base: the official Python image, pinned by digest as well as by tag.
# The tests build FROM a stand-in made from Debian's packages
# (tests/image/python-base.sh) that has python and pip in /usr/local/bin too.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. requirements.lock
# is requirements.txt's pins with a sha256 for each wheel (`make lock`): pip
# refuses any file whose hash differs, and installs no unpinned dependency.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock

COPY run.py ./
COPY ecs_cluster_manager/ ./ecs_cluster_manager/

USER 10001:10001

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "/app/run.py", "healthcheck"]

ENTRYPOINT ["python", "/app/run.py"]
