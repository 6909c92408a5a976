"""The hyperrec Airflow DAG file: point Airflow's dags_folder at this file (or copy it there).

Its settings come from the environment (HYPERREC_DATA_ROOT, HYPERREC_WORKDIR, ...: see
runners/airflow.py); the DAG id is the pipeline name, `hyperrec-<experiment>`.
"""
import hyperrec.pipeline  # noqa: F401  (Keras 2 semantics before TensorFlow is imported)
from hyperrec.pipeline.runners import airflow as airflow_runner

DAG = airflow_runner.dag_from_env()
