# Switchboard production image: `docker compose up` (see docker-compose.yml) or
#   docker build -t switchboard . && docker run -p 127.0.0.1:8765:8765 -v sb-data:/data switchboard
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    SWITCHBOARD_HOME=/data

WORKDIR /app

# Dependencies first, from the lock only, so code changes reuse this layer.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY adapters/ adapters/
COPY personas/ personas/
COPY workflows/ workflows/
COPY worker/ worker/
COPY migrations/ migrations/
RUN pip install --no-deps . && pip check && rm -rf build *.egg-info

RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home switchboard
USER switchboard
WORKDIR /data
VOLUME ["/data"]

EXPOSE 8765
CMD ["switchboard", "up", "--host", "0.0.0.0"]
