"""File SHA-256 in blocks equals hashlib over the whole file, for files larger than one block."""

from __future__ import annotations

import hashlib

from shv_toolkit.core.hashing import sha256_file


def test_blocks_give_the_whole_file_digest(shared_media):
    path = shared_media / "franck.mp4"
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == want
    assert sha256_file(path, chunk=4097) == want
