"""TF Serving's BatchingParameters, MonitoringConfig and SSLConfig protos, declared at run time.

The tensorflow-serving-api wheel ships ModelServerConfig but not these three, so they are
declared here from descriptors with TF Serving's package, file names, field names, numbers and
types. Parsing config files with protobuf's ``text_format`` then accepts exactly TF Serving's
text syntax and reports errors with line and column.

Only the BatchingParameters fields 1-9 are declared (up to ``max_execution_batch_size``); a file
that sets TF Serving's newer priority/padding-policy fields is rejected as an unknown field.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_Field = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tensorflow.serving"

# (name, number, type, label, type_name) per field; type_name only for message fields.
_FieldRow = tuple[str, int, int, int, str]
_OPTIONAL = _Field.LABEL_OPTIONAL
_REPEATED = _Field.LABEL_REPEATED
_MESSAGE = _Field.TYPE_MESSAGE

_BATCHING_PARAMETERS: tuple[_FieldRow, ...] = (
    ("max_batch_size", 1, _MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, _MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, _MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, _MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, _MESSAGE, _OPTIONAL, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _Field.TYPE_INT64, _REPEATED, ""),
    ("pad_variable_length_inputs", 7, _Field.TYPE_BOOL, _OPTIONAL, ""),
    ("enable_large_batch_splitting", 8, _MESSAGE, _OPTIONAL, ".google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, _MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
)
_PROMETHEUS_CONFIG: tuple[_FieldRow, ...] = (
    ("enable", 1, _Field.TYPE_BOOL, _OPTIONAL, ""),
    ("path", 2, _Field.TYPE_STRING, _OPTIONAL, ""),
)
_MONITORING_CONFIG: tuple[_FieldRow, ...] = (
    ("prometheus_config", 1, _MESSAGE, _OPTIONAL, f".{_PACKAGE}.PrometheusConfig"),
)
_SSL_CONFIG: tuple[_FieldRow, ...] = (
    ("server_key", 1, _Field.TYPE_STRING, _OPTIONAL, ""),
    ("server_cert", 2, _Field.TYPE_STRING, _OPTIONAL, ""),
    ("custom_ca", 3, _Field.TYPE_STRING, _OPTIONAL, ""),
    ("client_verify", 4, _Field.TYPE_BOOL, _OPTIONAL, ""),
)

# File name → (imports, messages as (name, fields)), mirroring TF Serving's .proto files.
_FILES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, tuple[_FieldRow, ...]], ...]]] = {
    "tensorflow_serving/servables/tensorflow/session_bundle_config.proto": (
        ("google/protobuf/wrappers.proto",),
        (("BatchingParameters", _BATCHING_PARAMETERS),),
    ),
    "tensorflow_serving/config/monitoring_config.proto": (
        (),
        (("PrometheusConfig", _PROMETHEUS_CONFIG), ("MonitoringConfig", _MONITORING_CONFIG)),
    ),
    "tensorflow_serving/config/ssl_config.proto": ((), (("SSLConfig", _SSL_CONFIG),)),
}


def _message_proto(name: str, rows: tuple[_FieldRow, ...]) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, field_type, label, type_name in rows:
        message.field.add(
            name=field_name,
            number=number,
            type=field_type,
            label=label,
            type_name=type_name or None,
        )
    return message


def _file_proto(
    file_name: str,
    imports: tuple[str, ...],
    messages: tuple[tuple[str, tuple[_FieldRow, ...]], ...],
) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name=file_name, package=_PACKAGE, syntax="proto3", dependency=imports
    )
    proto.message_type.extend(_message_proto(name, rows) for name, rows in messages)
    return proto


def _build_pool() -> descriptor_pool.DescriptorPool:
    """A private pool, so these names can never clash with a copy another library registers."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    for file_name, (imports, messages) in _FILES.items():
        pool.AddSerializedFile(_file_proto(file_name, imports, messages).SerializeToString())
    return pool


POOL = _build_pool()


def _message_class(name: str) -> Any:
    # A class made at run time from a descriptor: its fields are unknown to a type checker.
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


BatchingParameters = _message_class("BatchingParameters")
PrometheusConfig = _message_class("PrometheusConfig")
MonitoringConfig = _message_class("MonitoringConfig")
SSLConfig = _message_class("SSLConfig")
