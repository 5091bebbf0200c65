"""Bundle contents: per-tensor storage forms written into model.onnx / the sidecar, and the manifest.

A csr or 2:4 tensor stays in model.onnx as an external-data initializer naming `weights.sparse.npz`;
the runtime decodes it from there and hands it to ONNX Runtime in memory (`add_external_initializers`),
so ORT never follows a path from the bundle. A coo tensor becomes an ONNX `sparse_initializer`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..hashing import sha256_tree
from ..runtime import MANIFEST, MODEL, SIDECAR
from . import formats

# Bumped whenever convert writes a different bundle for the same checkpoint and options, so `edgeprune
# run` and benchmarks/kiosk.py reconvert rather than reuse what an older converter wrote (training is
# untouched by it). 2: 4-bit embeddings served by stock ops; manifest `runtime` (CPU: no SkipLayerNorm).
CONVERTER_VERSION = 2

SCHEMA_VERSION = 1
MIN_ELEMENTS = 256  # biases, LayerNorm and scales stay dense and are summed, not listed

PAYS_OFF = {
    "csr": "CSR storage is decoded to dense when the bundle loads: it saves download size only, "
           "not RAM or latency, on ONNX Runtime",
    "coo": "ONNX sparse_initializer (COO) is densified by ONNX Runtime at load: it saves download size "
           "only, and only above ~2/3 sparsity",
    "2:4": "2:4 runs faster only on sm80+ GPUs (cuSPARSELt / TensorRT sparse weights); elsewhere it is "
           "a storage form decoded at load",
}
SPEED_NOTE = ("Real CPU speed comes from structure (removed heads, FFN neurons, layers) and int8; "
              "unstructured and 2:4 sparsity change bundle bytes, not ONNX Runtime CPU latency.")


@dataclass
class Manifest:
    source: dict[str, Any]
    target: str | None
    format: str
    allowed_forms: list[str]
    quantization: dict[str, Any]
    structured: bool
    labels: list[str]
    raw_labels: list[str]      # id -> label value as written in the data files (for scoring eval data)
    max_length: int
    inputs: list[str]
    pad_token: str
    pad_token_id: int
    sparsity: dict[str, Any]
    structure: list[dict[str, Any]]
    optimization: dict[str, Any]
    tensors: list[dict[str, Any]]
    sizes: dict[str, Any]
    verification: dict[str, Any]
    accuracy: dict[str, Any]
    notes: list[str]
    vocabulary: dict[str, Any] = field(default_factory=lambda: {"mode": "full"})  # trim, if any (convert.vocab)
    runtime: dict[str, Any] = field(default_factory=dict)  # session settings the runtime applies (convert.optimize)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    edgeprune_version: str = __version__
    converter_version: int = CONVERTER_VERSION

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _onnx_dtype_name(data_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(data_type).lower()


FOUR_BIT = (22, 21)  # onnx.TensorProto.INT4, UINT4


def store_tensors(model_path: Path, out_dir: Path, allowed: list[str]) -> tuple[list[dict], int]:
    """Write `out_dir/model.onnx` (+ sidecar) choosing the smallest allowed form per tensor.

    Returns the per-tensor records and the bytes of the small tensors kept dense without a record.
    """
    import onnx
    from onnx import external_data_helper, helper, numpy_helper

    from .embeddings import PAIRS_SUFFIX

    model = onnx.load(str(model_path))
    records, sidecar, small = [], {}, 0
    for init in list(model.graph.initializer):
        if init.name.endswith(PAIRS_SUFFIX) and init.data_type == onnx.TensorProto.UINT8 and len(init.dims) == 2:
            # 4-bit levels two per uint8 byte (convert.embeddings)
            rows, pairs = init.dims
            records.append({"name": init.name, "shape": [rows, 2 * pairs], "dtype": "uint4", "packing": "pairs",
                            "form": "dense", "bytes": rows * pairs, "dense_bytes": rows * pairs,
                            "sparsity": None, "storage": MODEL})
            continue
        if init.data_type in FOUR_BIT:  # packed two per byte; no sparse form applies
            size = int(np.prod(init.dims))
            records.append({"name": init.name, "shape": list(init.dims), "dtype": _onnx_dtype_name(init.data_type),
                            "form": "dense", "bytes": (size + 1) // 2, "dense_bytes": (size + 1) // 2,
                            "sparsity": None, "storage": MODEL})
            continue
        array = numpy_helper.to_array(init)
        if array.size < MIN_ELEMENTS:
            small += array.nbytes
            continue
        chosen = formats.smallest(array, allowed)
        record = {"name": init.name, "shape": list(array.shape), "dtype": _onnx_dtype_name(init.data_type),
                  "form": chosen.form, "bytes": chosen.nbytes, "dense_bytes": int(array.nbytes),
                  "sparsity": round(float((array == 0).mean()), 6), "storage": MODEL}
        if chosen.form == "coo":
            values = numpy_helper.from_array(chosen.values, init.name)
            indices = numpy_helper.from_array(chosen.indices, init.name + ".indices")
            model.graph.initializer.remove(init)
            model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(array.shape)))
            record["storage"] = "sparse_initializer"
        elif chosen.form in formats.SIDECAR_FIELDS:
            key = f"t{len(records)}"
            sidecar.update(formats.sidecar_arrays(key, chosen))
            external_data_helper.set_external_data(init, location=SIDECAR, offset=0, length=int(array.nbytes))
            init.ClearField("raw_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            record.update(storage=SIDECAR, key=key)
            if chosen.form == "2:4":
                record["axis"] = chosen.axis
        records.append(record)
    onnx.save(model, str(out_dir / MODEL))
    if sidecar:
        np.savez(out_dir / SIDECAR, **sidecar)  # uncompressed: its bytes are the honest storage size
    return records, small


def finish(out_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """Hash every file (manifest.json excluded: bench edits it later) and write the manifest."""
    files = sha256_tree(out_dir)
    files.pop(MANIFEST, None)
    manifest.files = files
    data = manifest.to_json()
    (out_dir / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return data
