"""``load_weights`` on files that are not good weight archives: one clear ``ValueError``
naming the path and the problem, no unclosed file, no pickle, and the module unchanged."""

import io
import zipfile

import numpy as np
import pytest

from npcbam.nn import CBAM
from npcbam.weights import load_weights, read_weights, save_weights


def good_archive(tmp_path):
    module = CBAM(8, reduction=2, kernel_size=3, seed=1)
    return module, save_weights(module, tmp_path / "good.npz")


def member_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def truncated(tmp_path):
    data = good_archive(tmp_path)[1].read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_member(tmp_path):
    """A zip whose directory is intact but whose deflated member stops short."""
    state = CBAM(8, reduction=2, kernel_size=3, seed=1).state_dict()
    members = {f"{name}.npy": member_bytes(value) for name, value in state.items()}
    path = write_zip(tmp_path / "deflated.npz", members, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    # zero the middle of the first member's compressed data (its local header is 30 bytes
    # plus the name): the CRC or the inflation fails
    start = 30 + len("mlp.0.weight.npy")
    data[start + 10 : start + 40] = bytes(30)
    path.write_bytes(bytes(data))
    return path


def corrupt_member(tmp_path):
    """Stored (uncompressed) members, one byte of array data flipped: a CRC mismatch."""
    data = bytearray(good_archive(tmp_path)[1].read_bytes())
    data[200] ^= 0xFF
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(data))
    return path


def empty(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    return path


def npy(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(3.0))
    return path


def plain_text(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_text("mlp.0.weight = [0.1, 0.2]\n")
    return path


def garbage_member(tmp_path):
    """A valid zip whose member is not a .npy array (numpy would hand back raw bytes)."""
    return write_zip(tmp_path / "garbage.npz", {"mlp.0.weight.npy": b"not an array"})


def bad_npy_header(tmp_path):
    """A member with the .npy magic but a broken header."""
    return write_zip(tmp_path / "header.npz", {"conv.weight.npy": b"\x93NUMPY\x01\x00\xff\xffxx"})


def object_member(tmp_path):
    """A member holding a pickled Python object: refused, never unpickled."""
    return write_zip(
        tmp_path / "objects.npz", {"conv.weight.npy": member_bytes(np.array([{}], dtype=object))}
    )


BAD_FILES = {
    "truncated": (truncated, r"damaged|not an \.npz"),
    "truncated_member": (truncated_member, r"damaged"),
    "corrupt_member": (corrupt_member, r"damaged.*CRC"),
    "empty": (empty, r"the file is empty"),
    "npy": (npy, r"single \.npy array, not an \.npz archive"),
    "plain_text": (plain_text, r"not an \.npz archive .*zip signature"),
    "garbage_member": (garbage_member, r"\['mlp\.0\.weight'\] are not \.npy arrays"),
    "bad_npy_header": (bad_npy_header, r"damaged"),
    "object_member": (object_member, r"allow_pickle"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_weight_file_gives_one_clear_error(tmp_path, kind):
    """Warnings are errors (pyproject): an unclosed file would raise ResourceWarning here or
    at garbage collection, which pytest's unraisable-exception hook also turns into a failure."""
    make, message = BAD_FILES[kind]
    path = make(tmp_path)
    module = CBAM(8, reduction=2, kernel_size=3, seed=2)
    before = {name: value.copy() for name, value in module.state_dict().items()}
    with pytest.raises(ValueError, match=message) as info:
        load_weights(module, path)
    assert str(path) in str(info.value)
    assert info.type is ValueError  # not BadZipFile, EOFError or an internal error
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_missing_file_is_an_os_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        read_weights(tmp_path / "missing.npz")


def test_good_archive_still_loads(tmp_path):
    source, path = good_archive(tmp_path)
    target = CBAM(8, reduction=2, kernel_size=3, seed=3)
    load_weights(target, path)
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value)
