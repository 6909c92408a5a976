# Pipeline image: hyperrec's code on the stock TFX base (the same stack as requirements.lock).
# Serving does not use this image: production serves the pushed base path with the stock
# tensorflow/serving image (see serving/ and README.md).
FROM tensorflow/tfx:1.16.0

# Keras 2 semantics in every process of the image (DESIGN "Stack"); set before any import.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /hyperrec
COPY requirements.lock setup.py pyproject.toml ./
# The base image already holds tfx 1.16.0 and its stack; the lock adds and pins the rest.
RUN pip install --no-cache-dir -r requirements.lock
COPY pipeline/ pipeline/
COPY components/ components/
COPY serving/ serving/
COPY schemas/ schemas/
RUN pip install --no-cache-dir --no-deps -e .

ENTRYPOINT ["hyperrec"]
CMD ["--help"]
