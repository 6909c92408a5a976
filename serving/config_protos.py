"""Message classes for the two tensorflow_model_server config files whose protos pip lacks.

tensorflow-serving-api ships ModelServerConfig but not BatchingParameters
(servables/tensorflow/session_bundle_config.proto) nor MonitoringConfig
(config/monitoring_config.proto). Rather than hand-parsing their text format we declare the
same messages (same package, names and field types) in a private descriptor pool, so
`text_format.Parse` accepts exactly the files the stock server accepts and rejects the same
typos. Field numbers only matter for the binary encoding, which nothing here uses.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_FILE_NAME = "hyperrec/serving/tf_serving_config_subset.proto"
_PACKAGE = "tensorflow.serving"

_Field = descriptor_pb2.FieldDescriptorProto

# BatchingParameters: (name, number, type, label, type_name)
_BATCHING_FIELDS = (
    ("max_batch_size", 1, _Field.TYPE_MESSAGE, "google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, _Field.TYPE_MESSAGE, "google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, _Field.TYPE_MESSAGE, "google.protobuf.Int64Value"),
    ("num_batch_threads", 4, _Field.TYPE_MESSAGE, "google.protobuf.Int64Value"),
    ("thread_pool_name", 5, _Field.TYPE_MESSAGE, "google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _Field.TYPE_INT64, None),
    ("pad_variable_length_inputs", 7, _Field.TYPE_BOOL, None),
    ("enable_large_batch_splitting", 8, _Field.TYPE_MESSAGE, "google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, _Field.TYPE_MESSAGE, "google.protobuf.Int64Value"),
)


def _add_field(message: descriptor_pb2.DescriptorProto, name: str, number: int, field_type: int,
               type_name: str = None) -> None:
    field = message.field.add(name=name, number=number, type=field_type)
    field.label = _Field.LABEL_REPEATED if name == "allowed_batch_sizes" else _Field.LABEL_OPTIONAL
    if type_name:
        field.type_name = "." + type_name


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    proto_file = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package=_PACKAGE, syntax="proto3",
        dependency=[wrappers.name])
    batching = proto_file.message_type.add(name="BatchingParameters")
    for name, number, field_type, type_name in _BATCHING_FIELDS:
        _add_field(batching, name, number, field_type, type_name)

    prometheus = proto_file.message_type.add(name="PrometheusConfig")
    _add_field(prometheus, "enable", 1, _Field.TYPE_BOOL)
    _add_field(prometheus, "path", 2, _Field.TYPE_STRING)
    monitoring = proto_file.message_type.add(name="MonitoringConfig")
    _add_field(monitoring, "prometheus_config", 1, _Field.TYPE_MESSAGE,
               f"{_PACKAGE}.PrometheusConfig")
    pool.Add(proto_file)
    return pool


_POOL = _build_pool()


def _message_class(name: str):
    descriptor = _POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(_POOL).GetPrototype(descriptor)


BatchingParameters = _message_class("BatchingParameters")
MonitoringConfig = _message_class("MonitoringConfig")
