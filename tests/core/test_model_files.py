"""MLP.load on files it must refuse: every refusal is a one-sentence ValueError that names the file and the key, and
comes before the model is allocated. Valid files round-trip bit for bit."""

import io
import json
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from mlp_core import BIAS_CONVENTIONS, MLP, ModelConfig

INPUT_DIM = 12
HIDDEN = (6, 5)
ARCH = "12-6-5-10"


def saved_parts(tmp_path, bias="input_only", dtype=np.float32) -> tuple[dict, dict]:
    """(metadata, arrays) of a file written by MLP.save, ready to be tampered with and written back by `write`."""
    source = tmp_path / "source.npz"
    MLP(INPUT_DIM, ModelConfig(HIDDEN, activation="tanh", bias=bias), rng=0, dtype=dtype).save(source)
    with np.load(source) as npz:
        meta = json.loads(str(npz["meta"]))
        arrays = {key: npz[key] for key in npz.files if key != "meta"}
    return meta, arrays


def write(path, meta, arrays) -> None:
    """An npz like save() writes; `meta` is a dict (written as JSON), an array, or None (left out)."""
    members = dict(arrays)
    if isinstance(meta, dict):
        members["meta"] = np.array(json.dumps(meta))
    elif meta is not None:
        members["meta"] = meta
    with open(path, "wb") as fh:
        np.savez(fh, **members)


def refusal(path) -> str:
    """The message of the ValueError that MLP.load(path) raises; it names the file and is one sentence."""
    with pytest.raises(ValueError) as info:
        MLP.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message


def refusal_and_peak(path) -> tuple[str, int]:
    """``refusal(path)`` and the peak of traced memory while it ran (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        message = refusal(path)
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_refusal_helper_can_fail(tmp_path):
    path = tmp_path / "model.npz"
    MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0).save(path)
    with pytest.raises(pytest.fail.Exception):
        refusal(path)


# ---------------------------------------------------------------- arrays that do not fit the stored architecture
def _scalar(meta, arrays):
    arrays["W0"] = np.float32(0.5)  # np.load gives a 0-d array, which `w[...] = ` would broadcast


def _transposed(meta, arrays):
    arrays["W1"] = np.ascontiguousarray(arrays["W1"].T)


def _transposed_view(meta, arrays):
    arrays["W1"] = arrays["W1"].T  # written Fortran-ordered with the transposed shape


def _wider(meta, arrays):
    arrays["W2"] = np.zeros((5, 11), np.float32)


def _flattened(meta, arrays):
    arrays["W0"] = arrays["W0"].ravel()


def _bias_too_long(meta, arrays):
    arrays["b1"] = np.zeros(6, np.float32)


def _bias_as_column(meta, arrays):
    arrays["b0"] = arrays["b0"][:, None]


@pytest.mark.parametrize(
    "tamper,bias,expected",
    [
        (_scalar, "input_only", f"array 'W0' has shape () but the stored architecture {ARCH} with bias input_only "
                                "needs (13, 6)"),
        (_transposed, "input_only", "array 'W1' has shape (5, 6) but the stored architecture 12-6-5-10 with bias "
                                    "input_only needs (6, 5)"),
        (_transposed_view, "per_layer", "array 'W1' has shape (5, 6)"),
        (_wider, "input_only", "array 'W2' has shape (5, 11) but the stored architecture 12-6-5-10 with bias "
                               "input_only needs (5, 10)"),
        (_flattened, "per_layer", "array 'W0' has shape (72,) but the stored architecture 12-6-5-10 with bias "
                                  "per_layer needs (12, 6)"),
        (_bias_too_long, "per_layer", "array 'b1' has shape (6,) but the stored architecture 12-6-5-10 with bias "
                                      "per_layer needs (5,)"),
        (_bias_as_column, "per_layer", "array 'b0' has shape (6, 1)"),
    ],
    ids=["scalar", "transposed", "transposed-view", "wider", "flattened", "bias-too-long", "bias-as-column"],
)
def test_an_array_of_the_wrong_shape_is_refused(tmp_path, tamper, bias, expected):
    meta, arrays = saved_parts(tmp_path, bias)
    tamper(meta, arrays)
    write(tmp_path / "model.npz", meta, arrays)
    assert expected in refusal(tmp_path / "model.npz")


@pytest.mark.parametrize(
    "stored,array_dtype",
    [("float32", np.int32), ("float32", np.float64), ("float32", np.float16), ("float64", np.float32),
     ("float32", np.complex64), ("float32", np.uint32)],
)
def test_an_array_of_the_wrong_dtype_is_refused(tmp_path, stored, array_dtype):
    meta, arrays = saved_parts(tmp_path, dtype=np.dtype(stored))
    assert meta["dtype"] == stored and arrays["W1"].dtype == np.dtype(stored)  # save() stores the model's dtype
    arrays["W1"] = arrays["W1"].astype(array_dtype)
    write(tmp_path / "model.npz", meta, arrays)
    message = refusal(tmp_path / "model.npz")
    assert f"array 'W1' has dtype {np.dtype(array_dtype).name} but the stored dtype is {stored}" in message


@pytest.mark.parametrize("bias,key", [("input_only", "W0"), ("input_only", "W2"), ("per_layer", "b0"),
                                      ("per_layer", "b2")])
def test_a_missing_array_is_refused(tmp_path, bias, key):
    meta, arrays = saved_parts(tmp_path, bias)
    shape = arrays.pop(key).shape
    write(tmp_path / "model.npz", meta, arrays)
    assert f"array {key!r} is missing but the stored architecture {ARCH} with bias {bias} needs it with shape " \
           f"{shape}" in refusal(tmp_path / "model.npz")


@pytest.mark.parametrize("bias,key", [("input_only", "b0"), ("input_only", "W3"), ("per_layer", "b3"),
                                      ("per_layer", "extra")])
def test_an_unexpected_array_is_refused(tmp_path, bias, key):
    meta, arrays = saved_parts(tmp_path, bias)
    expected_keys = {"input_only": "meta, W0, W1, W2", "per_layer": "meta, W0, b0, W1, b1, W2, b2"}[bias]
    arrays[key] = np.zeros(6, np.float32)
    write(tmp_path / "model.npz", meta, arrays)
    message = refusal(tmp_path / "model.npz")
    assert f"unexpected array {key!r}; the stored architecture {ARCH} with bias {bias} holds only {expected_keys}" \
        in message


# ---------------------------------------------------------------- metadata that lies about the arrays
@pytest.mark.parametrize(
    "change,expected",
    [
        ({"hidden_sizes": [10**9, 10**9]}, "array 'W0' has shape (13, 6) but the stored architecture "
                                           "12-1000000000-1000000000-10 with bias input_only needs (13, 1000000000)"),
        ({"input_dim": 10**12}, "array 'W0' has shape (13, 6) but the stored architecture 1000000000000-6-5-10 with "
                                "bias input_only needs (1000000000001, 6)"),
        ({"num_classes": 10**10}, "array 'W2' has shape (5, 10)"),
        ({"hidden_sizes": [6, 5, 10**6]}, "array 'W2' has shape (5, 10) but the stored architecture "
                                          "12-6-5-1000000-10 with bias input_only needs (5, 1000000)"),
        ({"hidden_sizes": [6]}, "unexpected array 'W2'; the stored architecture 12-6-10 with bias input_only holds "
                                "only meta, W0, W1"),
        ({"bias": "per_layer"}, "array 'W0' has shape (13, 6) but the stored architecture 12-6-5-10 with bias "
                                "per_layer needs (12, 6)"),
    ],
    ids=["hidden-1e9x1e9", "input-1e12", "classes-1e10", "extra-layer-1e6", "fewer-layers", "other-bias"],
)
def test_metadata_that_lies_about_sizes_is_refused_from_the_arrays_without_allocating(tmp_path, change, expected):
    meta, arrays = saved_parts(tmp_path)
    write(tmp_path / "model.npz", {**meta, **change}, arrays)
    message, peak = refusal_and_peak(tmp_path / "model.npz")  # a ValueError, not a MemoryError
    assert expected in message
    assert peak < 2**20  # NumPy reports its buffers to tracemalloc: nothing near the claimed size was allocated


def _npy_member(shape, dtype="<f4", data=b"") -> bytes:
    """A .npy member whose header declares `shape` and whose data is `data` (possibly much shorter)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def _zip(path, members: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy_bytes(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _meta_member(meta) -> bytes:
    return _npy_bytes(np.array(json.dumps(meta)))


def _patch_directory(path, member: str, offset: int, fmt: str, *values) -> None:
    """Overwrite fields of `member`'s entry in the zip central directory (offset from the entry's signature)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + struct.unpack_from("<H", data, entry + 28)[0]] != name:  # name length at 28
        entry = data.index(b"PK\x01\x02", entry + 4)
    data[entry + offset : entry + offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(bytes(data))


def test_an_array_header_that_claims_more_data_than_its_member_holds_is_refused(tmp_path):
    """Header and metadata agree on a 520 MB W0, but only 64 bytes follow the header."""
    meta, arrays = saved_parts(tmp_path)
    meta["hidden_sizes"] = [10**7, 5]
    members = {"meta.npy": _meta_member(meta), "W0.npy": _npy_member((13, 10**7), data=b"\0" * 64),
               "W1.npy": _npy_member((10**7, 5)), "W2.npy": _npy_bytes(arrays["W2"])}
    _zip(tmp_path / "model.npz", members)
    message, peak = refusal_and_peak(tmp_path / "model.npz")
    assert "array 'W0' declares shape (13, 10000000) (520000000 bytes) but its member holds 64 bytes" in message
    assert peak < 2**20


def test_a_zip_directory_that_claims_more_bytes_than_the_file_holds_is_refused(tmp_path):
    """The central directory is patched to say W0 holds 3.6 GB, as its .npy header and the metadata also say.

    The members are stored (not compressed), so that many bytes would have to be in the file."""
    meta = {"format_version": 1, "input_dim": 9 * 10**8, "num_classes": 2, "hidden_sizes": [1],
            "activation": "sigmoid", "init": "uniform", "bias": "input_only", "dtype": "float32"}
    header = _npy_member((9 * 10**8 + 1, 1))
    path = tmp_path / "model.npz"
    _zip(path, {"meta.npy": _meta_member(meta), "W0.npy": header + b"\0" * 64,
                "W1.npy": _npy_member((1, 2), data=b"\0" * 8)})
    claimed = len(header) + 4 * (9 * 10**8 + 1)
    _patch_directory(path, "W0.npy", 20, "<II", claimed, claimed)  # its compressed and uncompressed sizes
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("W0.npy").file_size == claimed  # zipfile itself believes the directory
        total = sum(info.file_size for info in zf.infolist())
    size = path.stat().st_size
    message, peak = refusal_and_peak(path)
    assert f"the zip directory claims {total} bytes of members but the file is only {size} bytes" in message
    assert peak < 2**20


# ---------------------------------------------------------------- metadata that is missing, malformed or invalid
@pytest.mark.parametrize(
    "meta,expected",
    [
        (None, "metadata 'meta' is missing, so the architecture is unknown"),
        (np.array("{not json"), "metadata 'meta' is not valid JSON"),
        (np.array(""), "metadata 'meta' is not valid JSON"),
        (np.array("[1, 2]"), "metadata 'meta' must be a JSON object, got list"),
        (np.array("12"), "metadata 'meta' must be a JSON object, got int"),
        (np.zeros(3, np.float32), "metadata 'meta' must be a 0-d unicode string array, got dtype float32 and shape "
                                  "(3,)"),
        (np.array(["{}", "{}"]), "metadata 'meta' must be a 0-d unicode string array, got dtype <U2 and shape (2,)"),
        (np.array(b"{}"), "metadata 'meta' must be a 0-d unicode string array, got dtype |S2 and shape ()"),
    ],
    ids=["missing", "not-json", "empty", "list", "number", "float-array", "string-vector", "bytes"],
)
def test_missing_or_malformed_metadata_is_refused(tmp_path, meta, expected):
    _, arrays = saved_parts(tmp_path)
    write(tmp_path / "model.npz", meta, arrays)
    assert expected in refusal(tmp_path / "model.npz")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"format_version": 2}, "unknown format_version 2; this version reads 1"),
        ({"format_version": "1"}, "unknown format_version '1'; this version reads 1"),
        ({"format_version": 1.0}, "unknown format_version 1.0; this version reads 1"),
        ({"format_version": None}, "unknown format_version None; this version reads 1"),
        ({"input_dim": 0}, "metadata 'input_dim' must be an integer >= 1, got 0"),
        ({"input_dim": -12}, "metadata 'input_dim' must be an integer >= 1, got -12"),
        ({"input_dim": 12.0}, "metadata 'input_dim' must be an integer >= 1, got 12.0"),
        ({"input_dim": True}, "metadata 'input_dim' must be an integer >= 1, got True"),
        ({"num_classes": 1}, "metadata 'num_classes' must be an integer >= 2, got 1"),
        ({"num_classes": "10"}, "metadata 'num_classes' must be an integer >= 2, got '10'"),
        ({"hidden_sizes": [0]}, "the stored architecture is invalid: hidden_sizes must hold integers >= 1, got 0"),
        ({"hidden_sizes": [6, -5]}, "the stored architecture is invalid: hidden_sizes must hold integers >= 1, got -5"),
        ({"hidden_sizes": []}, "the stored architecture is invalid: hidden_sizes must be a non-empty list"),
        ({"hidden_sizes": [6.0, 5]}, "the stored architecture is invalid: hidden_sizes must hold integers >= 1, "
                                     "got 6.0"),
        ({"hidden_sizes": [True, 5]}, "the stored architecture is invalid: hidden_sizes must hold integers >= 1"),
        ({"hidden_sizes": "6,5"}, "the stored architecture is invalid: hidden_sizes must be a non-empty list"),
        ({"hidden_sizes": {"a": 6}}, "the stored architecture is invalid: hidden_sizes must be a non-empty list"),
        ({"activation": "softplus"}, "the stored architecture is invalid: unknown activation 'softplus'; valid "
                                     "choices: sigmoid"),
        ({"activation": ["tanh"]}, "the stored architecture is invalid: unknown activation ['tanh']"),
        ({"init": "zeros"}, "the stored architecture is invalid: unknown init 'zeros'; valid choices: uniform"),
        ({"bias": "none"}, "the stored architecture is invalid: unknown bias convention 'none'; valid choices: "
                           "per_layer, input_only"),
        ({"dtype": "int8"}, "metadata 'dtype' is 'int8'; valid choices: float32, float64"),
        ({"dtype": "object"}, "metadata 'dtype' is 'object'; valid choices: float32, float64"),
        ({"dtype": 4}, "metadata 'dtype' is 4; valid choices: float32, float64"),
        ({"extra": 1}, "metadata key 'extra' is not part of format_version 1"),
    ],
    ids=lambda value: ",".join(f"{k}={v!r}" for k, v in value.items()) if isinstance(value, dict) else "",
)
def test_invalid_metadata_is_refused(tmp_path, change, expected):
    meta, arrays = saved_parts(tmp_path)
    write(tmp_path / "model.npz", {**meta, **change}, arrays)
    assert expected in refusal(tmp_path / "model.npz")


@pytest.mark.parametrize("key", ["format_version", "input_dim", "num_classes", "hidden_sizes", "activation", "init",
                                 "bias", "dtype"])
def test_metadata_missing_a_key_is_refused(tmp_path, key):
    meta, arrays = saved_parts(tmp_path)
    del meta[key]
    write(tmp_path / "model.npz", meta, arrays)
    assert f"metadata key {key!r} is missing" in refusal(tmp_path / "model.npz")


# ---------------------------------------------------------------- files that are not model archives
def _npy_file(path):
    np.save(path.with_suffix(".tmp.npy"), np.zeros((3, 3), np.float32))
    path.write_bytes(path.with_suffix(".tmp.npy").read_bytes())


def _huge_npy_file(path):
    path.write_bytes(_npy_member((10**12,)))  # np.load would allocate 4 TB before finding the data missing


def _pickle_file(path):
    path.write_bytes(pickle.dumps({"W0": np.zeros(3)}))


def _truncated(path):
    MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0).save(path)
    path.write_bytes(path.read_bytes()[:200])


def _corrupted(path):
    MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0).save(path)
    data = bytearray(path.read_bytes())
    data[data.index(b"W1.npy") + 200] ^= 0xFF  # a byte of W1's data: the CRC no longer matches
    path.write_bytes(bytes(data))


def _compressed(path):
    model = MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0)
    model.save(path)
    with np.load(path) as npz:
        members = {key: npz[key] for key in npz.files}
    np.savez_compressed(path, **members)


def _encrypted(path):
    MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0).save(path)
    _patch_directory(path, "meta.npy", 8, "<H", 0x1)  # general purpose flag bit 0: encrypted


def _sizes_disagree(path):
    MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0).save(path)
    with zipfile.ZipFile(path) as zf:
        size = zf.getinfo("W1.npy").file_size
    _patch_directory(path, "W1.npy", 24, "<I", size + 1)  # uncompressed size one more than the stored size


def _text_member(path):
    meta, arrays = saved_parts(path.parent)
    write(path, meta, arrays)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("notes.txt", "hello")


def _not_npy_member(path):
    meta, _ = saved_parts(path.parent)
    _zip(path, {"meta.npy": _meta_member(meta), "W0.npy": b"not an npy file at all", "W1.npy": b"", "W2.npy": b""})


def _duplicate_member(path):
    meta, arrays = saved_parts(path.parent)
    write(path, meta, arrays)
    out = io.BytesIO()
    np.save(out, np.zeros((13, 6), np.float32))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as zf:
        zf.writestr("W0.npy", out.getvalue())


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p.write_bytes(b""), "not an .npz archive (it does not start with a zip signature)"),
        (lambda p: p.write_bytes(b"hello, world\n"), "not an .npz archive (it does not start with a zip signature)"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not an .npz archive"),
        (_npy_file, "not an .npz archive"),
        (_huge_npy_file, "not an .npz archive"),
        (_pickle_file, "not an .npz archive"),
        (_truncated, "not a readable .npz archive"),
        (_corrupted, "array 'W1' could not be read (Bad CRC-32"),
        (_compressed, "member 'meta' is stored compressed (deflate); MLP.save writes uncompressed members"),
        (_encrypted, "member 'meta' is encrypted; MLP.save writes plain members"),
        (_sizes_disagree, "member 'W1' is uncompressed but the zip directory gives it 248 bytes stored and 249 bytes "
                          "of content"),
        (_text_member, "unexpected array 'notes.txt'"),
        (_not_npy_member, "array 'W0' has no valid .npy header"),
        (_duplicate_member, "the archive holds 'W0' more than once"),
    ],
    ids=["empty", "text", "random", "npy", "huge-npy", "pickle", "truncated", "corrupted", "compressed", "encrypted",
         "sizes-disagree", "text-member", "not-npy-member", "duplicate-member"],
)
def test_a_file_that_is_not_a_model_archive_is_refused(tmp_path, make, expected):
    path = tmp_path / "model.npz"
    make(path)
    message, peak = refusal_and_peak(path)
    assert expected in message
    assert peak < 2**20


def test_a_missing_file_is_still_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        MLP.load(tmp_path / "nowhere.npz")


# ---------------------------------------------------------------- object arrays are never unpickled
RAN = []


def _record(value):
    RAN.append(value)
    return np.zeros((13, 6), np.float32)


class _Payload:
    def __reduce__(self):
        return _record, ("unpickled",)


@pytest.mark.parametrize("key", ["W0", "meta"])
def test_an_object_array_is_refused_without_unpickling(tmp_path, monkeypatch, key):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used on a model file")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    meta, arrays = saved_parts(tmp_path)
    payload = np.empty((), dtype=object)
    payload[()] = _Payload()
    if key == "meta":
        meta = payload
    else:
        arrays[key] = payload
    write(tmp_path / "model.npz", meta, arrays)
    RAN.clear()
    message = refusal(tmp_path / "model.npz")
    assert RAN == []
    assert "dtype object" in message


# ---------------------------------------------------------------- valid files
@pytest.mark.parametrize("bias", BIAS_CONVENTIONS)
@pytest.mark.parametrize("hidden_sizes", [(7,), (6, 5), (4, 9, 3, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_is_bit_identical_for_every_bias_depth_and_dtype(tmp_path, bias, hidden_sizes, dtype):
    model = MLP(INPUT_DIM, ModelConfig(hidden_sizes, activation="relu", init="he", bias=bias), 3, rng=5, dtype=dtype)
    if bias == "per_layer":
        for b in model.biases:
            b[...] = np.random.default_rng(1).normal(size=b.shape)  # save() must carry non-zero biases too
    model.save(tmp_path / "model.npz")
    loaded = MLP.load(tmp_path / "model.npz")
    assert loaded.config == model.config and loaded.sizes == model.sizes and loaded.dtype == np.dtype(dtype)
    assert loaded.params.dtype == np.dtype(dtype)
    assert loaded.params.tobytes() == model.params.tobytes()
    x = np.random.default_rng(0).normal(size=(9, INPUT_DIM)).astype(dtype)
    assert loaded.predict_logits(x).tobytes() == model.predict_logits(x).tobytes()


def test_equivalent_encodings_of_the_same_values_are_accepted(tmp_path):
    """Fortran order and the other byte order hold the same float32 values; the loader does not care."""
    meta, arrays = saved_parts(tmp_path, "per_layer")
    original = dict(arrays)
    arrays["W0"] = np.asfortranarray(arrays["W0"])
    arrays["W1"] = arrays["W1"].astype(">f4")
    write(tmp_path / "model.npz", meta, arrays)
    loaded = MLP.load(tmp_path / "model.npz")
    for i, w in enumerate(loaded.weights):
        assert w.tobytes() == original[f"W{i}"].tobytes()


def test_load_accepts_str_paths(tmp_path):
    MLP(INPUT_DIM, ModelConfig(HIDDEN), rng=0).save(tmp_path / "model.npz")
    assert MLP.load(str(tmp_path / "model.npz")).sizes == [INPUT_DIM, *HIDDEN, 10]
