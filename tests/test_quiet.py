"""The terminal shows our lines: library notices are dropped, our absl lines are kept."""
import logging

from absl import logging as absl_logging

from hyperrec.pipeline import quiet


def test_transform_table_notice_is_dropped_and_our_warnings_stay(caplog):
    quiet.python_logs()
    quiet.python_logs()  # idempotent: one filter
    absl = logging.getLogger("absl")
    assert sum(type(f).__name__ == "_DropLibraryNotices" for f in absl.filters) == 1
    with caplog.at_level(logging.WARNING):
        absl_logging.warning("Tables initialized inside a tf.function  will be re-initialized"
                             " on every invocation: apply_vocab/text_file_init")
        absl_logging.warning("ExampleGen: 3 rows quarantined")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["ExampleGen: 3 rows quarantined"]
    assert logging.getLogger("apache_beam.io.tfrecordio").getEffectiveLevel() == logging.ERROR
