# Pipeline image: hyperrec's code on the stock TFX base (the same stack as requirements.lock).
# One image for every place pipeline code runs: Kubeflow Pipelines tasks (the compiled spec sets
# each task's command), Dataflow workers (--sdk_container_image) and portable Flink/Spark SDK
# harnesses (DOCKER environment). Serving does not use it: production serves the pushed base
# path with the stock tensorflow/serving image (see serving/ and README.md).
FROM tensorflow/tfx:1.16.0

# Keras 2 semantics in every process of the image (DESIGN "Stack"); set before any import.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The project root inside the image: compiled Kubeflow specs name the curated schema as
# /hyperrec/schemas/... (pipeline/runners/kubeflow.py IMAGE_PROJECT_ROOT).
WORKDIR /hyperrec
# The lock is resolved for Python 3.10: a base with another Python fails here, not at run time.
RUN python -c "import sys; assert sys.version_info[:2] == (3, 10), sys.version"
COPY requirements.lock setup.py pyproject.toml ./
# The base image already holds tfx 1.16.0 and its stack; the lock adds and pins the rest.
RUN pip install --no-cache-dir -r requirements.lock
# setup.py's package folders (pipeline, components, data, serving) and the curated schemas.
COPY pipeline/ pipeline/
COPY components/ components/
COPY data/ data/
COPY serving/ serving/
COPY schemas/ schemas/
RUN pip install --no-cache-dir --no-deps -e . && hyperrec --help > /dev/null

# Beam's SDK harness launcher, of the lock's Beam and Python versions: Dataflow and portable
# runners start workers through the image's entry point. The command line is
# `docker run --entrypoint hyperrec IMAGE --help`; Kubeflow tasks set their own command.
COPY --from=apache/beam_python3.10_sdk:2.59.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
