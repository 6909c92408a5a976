"""The request log: TFRecord framing, torn tails, rotation, a writer killed by SIGKILL, and
what the server writes into it."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from hyperrec.serving import config, record_io, request_log
import standin_models
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(120)


def payload(index: int, size: int = 100) -> bytes:
    """A record that carries its own index and a checkable body."""
    body = (f"{index:08d}".encode() * (size // 8 + 1))[:size]
    return f"{index}:".encode() + body


def test_frames_are_tfrecords_that_tensorflow_reads(tmp_path):
    path = tmp_path / "records.tfrecord"
    records = [b"", b"a", payload(1), bytes(range(256)) * 40]
    path.write_bytes(b"".join(record_io.encode(r) for r in records))
    assert list(record_io.read_file(str(path))) == records
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records


def test_tensorflow_written_records_read_back(tmp_path):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(5):
            writer.write(payload(i))
    assert list(record_io.read_file(path)) == [payload(i) for i in range(5)]


def test_every_torn_tail_yields_exactly_the_complete_records():
    records = [payload(i, 37) for i in range(3)]
    data = b"".join(record_io.encode(r) for r in records)
    last_start = len(data) - len(record_io.encode(records[-1]))
    for cut in range(last_start, len(data)):
        summary = record_io.ReadSummary()
        got = list(record_io.read_frames(io.BytesIO(data[:cut]), summary))
        assert got == records[:-1], cut
        assert summary.trailing_bytes == cut - last_start
        assert (summary.reason is None) == (cut == last_start)


def test_a_corrupt_record_stops_the_read():
    records = [payload(i) for i in range(3)]
    data = bytearray(b"".join(record_io.encode(r) for r in records))
    data[len(record_io.encode(records[0])) + 20] ^= 0xFF  # inside record 1's data
    summary = record_io.ReadSummary()
    assert list(record_io.read_frames(io.BytesIO(bytes(data)), summary)) == records[:1]
    assert summary.reason == "corrupt data"


def test_writer_rotates_and_keeps_the_newest_files(tmp_path):
    writer = request_log.RequestLogWriter(str(tmp_path), max_file_bytes=1000, max_files=3)
    for i in range(50):
        writer.write(payload(i))
    writer.close()
    files = request_log.log_files(str(tmp_path))
    assert len(files) == 3
    got = list(request_log.read_records(str(tmp_path)))
    indices = [int(r.split(b":")[0]) for r in got]
    assert indices == list(range(indices[0], 50))  # the newest records, in order, none lost


def test_a_new_writer_starts_a_new_file(tmp_path):
    for _ in range(2):
        writer = request_log.RequestLogWriter(str(tmp_path))
        writer.write(b"x")
        writer.close()
    assert len(request_log.log_files(str(tmp_path))) == 2
    assert list(request_log.read_records(str(tmp_path))) == [b"x", b"x"]


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from hyperrec.serving import request_log
    writer = request_log.RequestLogWriter(sys.argv[1], max_file_bytes=int(sys.argv[2]))
    print("ready", flush=True)
    index = 0
    while True:  # until killed
        body = (b"%08d" % index) * (1 + index % 4096)
        writer.write(str(index).encode() + b":" + body)
        index += 1
""")


def check_contiguous(records):
    indices = []
    for record in records:
        index, body = record.split(b":", 1)
        index = int(index)
        assert body == (b"%08d" % index) * (1 + index % 4096)  # never a torn body
        indices.append(index)
    return indices


@pytest.mark.parametrize("run", range(3))
def test_records_survive_a_writer_killed_mid_stream(tmp_path, run):
    """A real process appending large records is SIGKILLed; every record read is whole."""
    directory = tmp_path / "log"
    process = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(directory),
                                str(4 << 20)], stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(0.3 + 0.1 * run)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        process.stdout.close()
    summaries = {}
    indices = check_contiguous(request_log.read_records(str(directory), summaries))
    assert indices and indices == list(range(len(indices)))
    # Only the last file may have a torn tail; everything before it was complete.
    files = request_log.log_files(str(directory))
    assert all(summaries[path].reason is None for path in files[:-1])


def test_the_server_logs_requests_and_responses(tmp_path):
    base = tmp_path / "m"
    standin_models.save_half_plus_two(str(base / "1"))
    log_dir = tmp_path / "requests"
    options = ServerOptions(models=config.single_model("m", str(base)), grpc_port=None,
                            rest_port=0, poll_seconds=0, request_log_dir=str(log_dir))
    with ModelServer(options) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        for body in ({"instances": [1.0, 2.0]}, {"instances": ["bad"]},
                     {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}):
            verb = "regress" if "examples" in body else "predict"
            connection.request("POST", f"/v1/models/m:{verb}", json.dumps(body))
            connection.getresponse().read()
        connection.close()
    logs = list(request_log.read_prediction_logs(str(log_dir)))
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "regress_log"]
    predict = logs[0]
    assert predict.log_metadata.model_spec.name == "m"
    assert predict.log_metadata.model_spec.version.value == 1
    assert predict.log_metadata.timestamp_secs > 0
    assert tf.make_ndarray(predict.predict_log.request.inputs["x"]).tolist() == [1.0, 2.0]
    assert tf.make_ndarray(predict.predict_log.response.outputs["y"]).tolist() == [2.5, 3.0]
    features = request_log.request_features(predict)
    assert features["x"].tolist() == [1.0, 2.0]
    regress = logs[1]
    assert regress.regress_log.response.result.regressions[0].value == 42.0
    assert request_log.request_features(regress) == {"x": [[80.0]]}
    assert os.listdir(log_dir)
