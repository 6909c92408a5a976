"""Where a runner keeps ML Metadata: a SQLite file (local development) or a MySQL/MariaDB
server (shared, production), named by one string on the command line.

    runs/local/metadata.sqlite                 a SQLite file
    mysql://USER[:PASSWORD]@HOST[:PORT]/DB     a MySQL or MariaDB database (ml-metadata's
                                               own client; the database is created if absent)

A password in the URI lands in shell history, so it may come from $MLMD_MYSQL_PASSWORD.
Kubeflow Pipelines brings its own MLMD and takes none of these.
"""
from __future__ import annotations

import os
import urllib.parse

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

PASSWORD_ENV = "MLMD_MYSQL_PASSWORD"


class MetadataUriError(ValueError):
    """A metadata location that names no usable store."""


def connection_config(location: str) -> metadata_store_pb2.ConnectionConfig:
    """The MLMD connection for `location` (a SQLite path or a mysql:// URI)."""
    if not location:
        raise MetadataUriError("empty metadata location")
    if "://" not in location:
        return metadata.sqlite_metadata_connection_config(os.path.abspath(location))
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme not in ("mysql", "mariadb"):
        raise MetadataUriError(
            f"metadata URI scheme {parsed.scheme!r} is not supported (mysql:// or a SQLite path)")
    database = parsed.path.lstrip("/")
    if not parsed.hostname or not database or "/" in database:
        raise MetadataUriError(
            f"metadata URI {location!r} must be mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
    try:
        port = parsed.port or 3306
    except ValueError as err:  # a port that is not a number or out of range
        raise MetadataUriError(f"metadata URI {location!r}: {err}") from err
    config = metadata_store_pb2.ConnectionConfig()
    config.mysql.host = parsed.hostname
    config.mysql.port = port
    config.mysql.database = database
    config.mysql.user = urllib.parse.unquote(parsed.username or "")
    password = parsed.password
    config.mysql.password = urllib.parse.unquote(
        password if password is not None else os.environ.get(PASSWORD_ENV, ""))
    return config


def describe(config: metadata_store_pb2.ConnectionConfig) -> str:
    """The connection without its password, for logs and reports."""
    if config.HasField("mysql"):
        return (f"mysql://{config.mysql.user}@{config.mysql.host}:{config.mysql.port}/"
                f"{config.mysql.database}")
    return config.sqlite.filename_uri
