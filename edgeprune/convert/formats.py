"""Weight storage forms, one dataclass each, with `from_dense` / `to_dense` and an honest byte count.

numpy-only on purpose: the kiosk runtime decodes `csr` and `2:4` tensors with these same classes.
Which form pays off where (the facts convert reports, see DESIGN.md section 5):
- `dense`: what every runtime executes.
- `csr`: values + column indices + row pointers; smaller than dense above ~1/3 sparsity (16-bit column
  indices). Decoded to dense at load: it saves download size, not RAM or latency.
- `2:4`: half the values + 2-bit positions; always ~53% of dense for a 2:4 tensor. Faster only on sm80+
  GPUs (cuSPARSELt/TensorRT); on CPU a storage form.
- `coo`: ONNX `sparse_initializer` (values + int64 linear indices, 12 bytes per fp32 nonzero): smaller
  than dense only above 2/3 sparsity, and ONNX Runtime densifies it when the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMS = ("dense", "csr", "2:4", "coo")


@dataclass(frozen=True)
class DenseTensor:
    values: np.ndarray

    form = "dense"

    @classmethod
    def from_dense(cls, array: np.ndarray) -> "DenseTensor":
        return cls(np.ascontiguousarray(array))

    def to_dense(self) -> np.ndarray:
        return self.values

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


def _as_2d(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1) if array.ndim != 2 else array


@dataclass(frozen=True)
class CSRTensor:
    shape: tuple[int, ...]
    values: np.ndarray       # nonzeros, row by row, original dtype
    col_indices: np.ndarray  # uint16 when the row is short enough, else int32
    row_ptr: np.ndarray      # int32, rows + 1

    form = "csr"

    @classmethod
    def from_dense(cls, array: np.ndarray) -> "CSRTensor":
        matrix = _as_2d(np.asarray(array))
        rows, cols = np.nonzero(matrix)
        index_dtype = np.uint16 if matrix.shape[1] <= np.iinfo(np.uint16).max + 1 else np.int32
        counts = np.bincount(rows, minlength=matrix.shape[0])
        row_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return cls(tuple(array.shape), matrix[rows, cols], cols.astype(index_dtype), row_ptr)

    def to_dense(self) -> np.ndarray:
        rows_n = self.shape[0]
        cols_n = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        out = np.zeros((rows_n, cols_n), dtype=self.values.dtype)
        rows = np.repeat(np.arange(rows_n), np.diff(self.row_ptr))
        out[rows, self.col_indices.astype(np.int64)] = self.values
        return out.reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.col_indices.nbytes + self.row_ptr.nbytes)


@dataclass(frozen=True)
class Packed24Tensor:
    """2:4 along `axis` (groups of 4 consecutive weights feeding one output keep at most 2 nonzeros).

    ONNX MatMul stores weights as [in, out] (torch's transpose), so the groups may run along axis 0;
    `from_dense` tries the last axis, then the first.
    """

    shape: tuple[int, ...]
    axis: int
    values: np.ndarray    # the two kept values of every group of four, shape (groups, 2)
    metadata: np.ndarray  # uint8: two 2-bit positions per group (4 bits), two groups per byte

    form = "2:4"

    @staticmethod
    def is_2of4(array: np.ndarray, axis: int) -> bool:
        moved = np.moveaxis(np.asarray(array), axis, -1)
        if moved.shape[-1] % 4:
            return False
        groups = moved.reshape(-1, 4)
        return bool(((groups != 0).sum(axis=1) <= 2).all())

    @classmethod
    def from_dense(cls, array: np.ndarray) -> "Packed24Tensor":
        array = np.asarray(array)
        axis = next((a for a in (array.ndim - 1, 0) if cls.is_2of4(array, a)), None)
        if axis is None:
            raise ValueError(f"tensor of shape {array.shape} is not 2:4 sparse along its first or last axis")
        groups = np.moveaxis(array, axis, -1).reshape(-1, 4)
        # positions of the two kept entries: nonzeros first, then zero-valued fillers, in index order
        order = np.argsort(groups == 0, axis=1, kind="stable")[:, :2]
        order.sort(axis=1)
        values = np.take_along_axis(groups, order, axis=1)
        nibbles = (order[:, 0] | (order[:, 1] << 2)).astype(np.uint8)
        if len(nibbles) % 2:
            nibbles = np.append(nibbles, np.uint8(0))
        metadata = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
        return cls(tuple(array.shape), axis, np.ascontiguousarray(values), metadata)

    def to_dense(self) -> np.ndarray:
        n_groups = self.values.shape[0]
        nibbles = np.stack([self.metadata & 0x0F, self.metadata >> 4], axis=1).reshape(-1)[:n_groups]
        pos = np.stack([nibbles & 0b11, (nibbles >> 2) & 0b11], axis=1).astype(np.int64)
        groups = np.zeros((n_groups, 4), dtype=self.values.dtype)
        np.put_along_axis(groups, pos, self.values, axis=1)
        moved_shape = list(self.shape)
        moved_shape.append(moved_shape.pop(self.axis))
        return np.moveaxis(groups.reshape(moved_shape), -1, self.axis)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.metadata.nbytes)


@dataclass(frozen=True)
class COOTensor:
    """The ONNX `sparse_initializer` layout: nonzero values + their int64 linear indices."""

    shape: tuple[int, ...]
    values: np.ndarray
    indices: np.ndarray  # int64, positions in the flattened tensor

    form = "coo"

    @classmethod
    def from_dense(cls, array: np.ndarray) -> "COOTensor":
        flat = np.asarray(array).reshape(-1)
        idx = np.flatnonzero(flat).astype(np.int64)
        return cls(tuple(np.shape(array)), flat[idx], idx)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(int(np.prod(self.shape)), dtype=self.values.dtype)
        out[self.indices] = self.values
        return out.reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.indices.nbytes)


CLASSES = {"dense": DenseTensor, "csr": CSRTensor, "2:4": Packed24Tensor, "coo": COOTensor}


def encode(array: np.ndarray, form: str):
    return CLASSES[form].from_dense(array)


def smallest(array: np.ndarray, allowed: tuple[str, ...] | list[str]):
    """The allowed form with the fewest bytes (dense wins ties); a form that cannot hold it is skipped."""
    best = DenseTensor.from_dense(array)
    for form in allowed:
        if form == "dense" or form not in CLASSES:
            continue
        try:
            candidate = CLASSES[form].from_dense(array)
        except ValueError:
            continue
        if candidate.nbytes < best.nbytes:
            best = candidate
    return best


# --- sidecar file: csr / 2:4 tensors stored beside model.onnx as one npz (no pickle) ---------------

SIDECAR_FIELDS = {"csr": ("values", "col_indices", "row_ptr"), "2:4": ("values", "metadata")}


def sidecar_arrays(key: str, tensor) -> dict[str, np.ndarray]:
    return {f"{key}.{f}": getattr(tensor, f) for f in SIDECAR_FIELDS[tensor.form]}


def from_sidecar(form: str, key: str, arrays, shape: list[int], axis: int | None = None) -> np.ndarray:
    """Decode one tensor from an opened npz (`np.load(..., allow_pickle=False)`)."""
    if form == "csr":
        return CSRTensor(tuple(shape), arrays[f"{key}.values"], arrays[f"{key}.col_indices"],
                         arrays[f"{key}.row_ptr"]).to_dense()
    if form == "2:4":
        return Packed24Tensor(tuple(shape), int(axis or 0), arrays[f"{key}.values"],
                              arrays[f"{key}.metadata"]).to_dense()
    raise ValueError(f"unknown sidecar form {form!r}")
