"""The Pusher's duplicate-version check goes through tf.io.gfile, so it works on any filesystem.

TensorFlow's in-memory `ram://` filesystem stands in for `gs://` / `s3://`: code that used
os.listdir or filecmp would see nothing there.
"""
import os
import uuid

import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import tensorflow as tf

from hyperrec.components import pusher


def _write_tree(root: str, files: dict) -> None:
    for relative, data in files.items():
        path = os.path.join(root, relative)
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb") as handle:
            handle.write(data)


MODEL = {"saved_model.pb": b"graph", "variables/variables.index": b"index",
         "variables/variables.data-00000-of-00001": b"weights"}


def test_identical_newest_version_on_a_remote_filesystem_is_found(tmp_path):
    base = f"ram://serving-{uuid.uuid4().hex}/hyperrec"
    _write_tree(os.path.join(base, "1"), {**MODEL, "variables/variables.data-00000-of-00001": b"old"})
    _write_tree(os.path.join(base, "2"), MODEL)
    _write_tree(os.path.join(base, "3-incomplete"), MODEL)  # not a version: not all digits
    _write_tree(os.path.join(base, "4"), {"variables/variables.index": b"index"})  # no graph yet
    candidate = str(tmp_path / "candidate")
    _write_tree(candidate, MODEL)
    assert pusher.pushed_versions(base) == [1, 2]
    assert pusher.already_pushed_version(candidate, base) == "2"


def test_a_changed_file_or_an_extra_file_is_a_new_model(tmp_path):
    base = f"ram://serving-{uuid.uuid4().hex}/hyperrec"
    _write_tree(os.path.join(base, "7"), MODEL)
    changed = str(tmp_path / "changed")
    _write_tree(changed, {**MODEL, "variables/variables.index": b"other"})
    extra = str(tmp_path / "extra")
    _write_tree(extra, {**MODEL, "assets/vocab.txt": b"a"})
    assert pusher.already_pushed_version(changed, base) is None
    assert pusher.already_pushed_version(extra, base) is None


def test_an_empty_or_missing_base_path_has_no_versions(tmp_path):
    assert pusher.pushed_versions(f"ram://nothing-{uuid.uuid4().hex}") == []
    candidate = str(tmp_path / "candidate")
    _write_tree(candidate, MODEL)
    assert pusher.already_pushed_version(candidate, str(tmp_path / "absent")) is None
