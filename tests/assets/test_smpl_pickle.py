"""The SMPL unpickler against hostile pickles written opcode by opcode (pickletools' names), and real ones."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from farm.assets.smpl_pickle import MAX_ARRAY_BYTES, read_smpl_pickle
from farm.core.errors import FarmError


def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s: str) -> bytes:
    data = s.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def set_class_attribute(module: str, name: str, attribute: str) -> bytes:
    """{'J_regressor': <the class>} after BUILD (None, {attribute: 'pwned'}): BUILD's slot state is setattr."""
    build = global_(module, name) + b"N}" + text(attribute) + text("pwned") + b"s\x86b"
    return b"\x80\x02}" + text("J_regressor") + build + b"s."


def class_state(cls: type) -> dict[str, object]:
    return dict(vars(cls))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("scipy.sparse._csc", "csc_matrix"),
        ("scipy.sparse.csr", "csr_matrix"),
        ("chumpy.ch", "Ch"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
    ],
)
def test_a_pickle_that_sets_a_class_attribute_is_refused_and_changes_nothing(
    tmp_path: Path, module: str, name: str
) -> None:
    before = {cls: class_state(cls) for cls in (scipy.sparse.csc_matrix, scipy.sparse.csr_matrix, np.ndarray)}
    path = tmp_path / "SMPL_FEMALE.pkl"
    path.write_bytes(set_class_attribute(module, name, "toarray"))
    with pytest.raises(FarmError, match="not array data: refusing") as refused:
        read_smpl_pickle(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    assert {cls: class_state(cls) for cls in before} == before
    assert scipy.sparse.csc_matrix(np.eye(2)).toarray().tolist() == [[1, 0], [0, 1]]


def test_the_stand_ins_themselves_cannot_be_changed(tmp_path: Path) -> None:
    """The record classes are shared by every load: a pickle that sets an attribute on one must not stick."""
    import farm.assets.smpl_pickle as module

    path = tmp_path / "SMPL_FEMALE.pkl"
    path.write_bytes(set_class_attribute("scipy.sparse._csc", "csc_matrix", "__setstate__"))
    with pytest.raises(FarmError, match="not array data"):
        read_smpl_pickle(path)
    assert "__setstate__" in vars(module._Record) and "__setstate__" not in vars(module._CscRecord)


def test_a_pickle_declaring_a_huge_array_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    count = MAX_ARRAY_BYTES + 1
    shape = b"\x8a\x08" + count.to_bytes(8, "little") + b"\x85"  # LONG1 count, TUPLE1
    array = (
        global_("numpy.core.multiarray", "_reconstruct")
        + global_("numpy", "ndarray")
        + shape
        + b"C\x01b\x87R"
    )  # _reconstruct(ndarray, (count,), b'b')
    path = tmp_path / "SMPL_FEMALE.pkl"
    path.write_bytes(b"\x80\x02}" + text("v_template") + array + b"s.")
    with pytest.raises(FarmError, match=r"size cap, which is not array data: refusing"):
        read_smpl_pickle(path)


def test_a_huge_element_type_and_python_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "SMPL_FEMALE.pkl"
    huge = (
        global_("numpy", "dtype") + text(f"V{MAX_ARRAY_BYTES + 1}") + b"\x89\x88\x87R"
    )  # dtype(V.., False, True)
    path.write_bytes(b"\x80\x02}" + text("f") + huge + b"s.")
    with pytest.raises(FarmError, match="size cap"):
        read_smpl_pickle(path)
    path.write_bytes(b"\x80\x02}" + text("f") + global_("numpy", "dtype") + text("O") + b"\x89\x88\x87Rs.")
    with pytest.raises(FarmError, match="Python objects"):
        read_smpl_pickle(path)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_arrays_and_sparse_matrices_come_back_equal(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(3)
    dense = rng.random((24, 40)) * (rng.random((24, 40)) < 0.2)
    data = {
        "v_template": rng.random((40, 3)),
        "f": rng.integers(0, 40, (10, 3)).astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(dense),
        "weights_csr": scipy.sparse.csr_matrix(dense),
        "bs_style": "lbs",
    }
    path = tmp_path / "SMPL_FEMALE.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    back = read_smpl_pickle(path)
    np.testing.assert_array_equal(back["v_template"], data["v_template"])
    np.testing.assert_array_equal(back["f"], data["f"])
    assert type(back["J_regressor"]) is scipy.sparse.csc_matrix
    assert type(back["weights_csr"]) is scipy.sparse.csr_matrix
    np.testing.assert_array_equal(back["J_regressor"].toarray(), dense)
    np.testing.assert_array_equal(back["weights_csr"].toarray(), dense)
    assert back["bs_style"] == "lbs"
