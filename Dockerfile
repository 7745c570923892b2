# One image for every process: web (uvicorn), gRPC (grpcrunserver) and one-off commands.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATASTREAM_VAR_DIR=/var/lib/datastream

# git (and ssh for its remotes) for git store mounts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY manage.py ./
COPY settings_service settings_service
COPY datastream_app datastream_app
COPY protos protos
COPY templates templates
COPY examples examples

RUN useradd --system --home /app datastream \
    && mkdir -p /var/lib/datastream \
    && chown datastream /var/lib/datastream
USER datastream

EXPOSE 8000 50051
CMD ["uvicorn", "settings_service.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
