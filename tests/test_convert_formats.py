import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.convert.formats import (COOTensor, CSRTensor, DenseTensor, Packed24Tensor, encode, from_sidecar,
                                       sidecar_arrays, smallest)

rng = np.random.default_rng(0)


def sparse(shape, sparsity, dtype=np.float32):
    w = rng.normal(size=shape).astype(np.float32)
    w[rng.random(shape) < sparsity] = 0
    return w.astype(dtype) if dtype != np.int8 else np.clip(w * 40, -127, 127).astype(np.int8)


def two_of_four(shape, axis):
    w = np.moveaxis(rng.normal(size=shape).astype(np.float32), axis, -1).copy()
    groups = w.reshape(-1, 4)
    for g in groups:
        g[rng.choice(4, 2, replace=False)] = 0
    return np.moveaxis(groups.reshape(w.shape), -1, axis)


@pytest.mark.parametrize("cls", [DenseTensor, CSRTensor, COOTensor])
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 1.0])
def test_round_trip_is_exact(cls, dtype, sparsity):
    w = sparse((37, 33), sparsity, dtype)
    t = cls.from_dense(w)
    back = t.to_dense()
    assert back.dtype == w.dtype and back.shape == w.shape and np.array_equal(back, w)


@pytest.mark.parametrize("axis", [0, 1])
def test_2of4_round_trip_either_axis(axis):
    w = two_of_four((32, 36), axis)
    t = Packed24Tensor.from_dense(w)
    assert t.axis in (0, 1) and np.array_equal(t.to_dense(), w)
    assert t.nbytes == w.size // 2 * 4 + w.size // 8  # half the values + 4 bits per group of four


def test_2of4_refuses_a_tensor_that_is_not_2of4():
    with pytest.raises(ValueError, match="not 2:4"):
        Packed24Tensor.from_dense(sparse((8, 8), 0.1))


def test_byte_counts_and_choice_are_honest():
    half = sparse((64, 64), 0.5)
    assert CSRTensor.from_dense(half).nbytes < half.nbytes < COOTensor.from_dense(half).nbytes
    assert smallest(half, ["csr", "coo"]).form == "csr"
    assert smallest(half, ["coo"]).form == "dense"  # COO costs 12 bytes per fp32 nonzero
    assert smallest(sparse((64, 64), 0.9), ["coo"]).form == "coo"
    assert smallest(sparse((64, 64), 0.0), ["csr", "2:4", "coo"]).form == "dense"
    assert smallest(two_of_four((64, 64), 1), ["2:4"]).form == "2:4"


@pytest.mark.parametrize("form", ["csr", "2:4"])
def test_sidecar_round_trip(tmp_path, form):
    w = two_of_four((16, 24), 0)
    np.savez(tmp_path / "s.npz", **sidecar_arrays("t0", encode(w, form)))
    with np.load(tmp_path / "s.npz", allow_pickle=False) as arrays:
        back = from_sidecar(form, "t0", arrays, list(w.shape), encode(w, form).__dict__.get("axis"))
    assert np.array_equal(back, w)


def test_onnxruntime_loads_sparse_initializer_and_computes_as_dense(tmp_path):
    w = sparse((32, 16), 0.8)
    coo = COOTensor.from_dense(w)

    def model(sparse_init: bool):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 16])],
            initializer=[] if sparse_init else [numpy_helper.from_array(w, "w")],
            sparse_initializer=[helper.make_sparse_tensor(numpy_helper.from_array(coo.values, "w"),
                                                          numpy_helper.from_array(coo.indices, "w.idx"),
                                                          list(w.shape))] if sparse_init else [],
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m.SerializeToString()

    x = rng.normal(size=(3, 32)).astype(np.float32)
    dense = ort.InferenceSession(model(False), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    from_sparse = ort.InferenceSession(model(True), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(from_sparse, dense, atol=1e-6)
    np.testing.assert_allclose(dense, x @ w, atol=1e-5)
