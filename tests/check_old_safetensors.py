"""Reads every .safetensors file of a model directory with an old safetensors (0.3.x, the PyTorch
2.0 era; numpy backend, so no torch needed) and checks each tensor's bytes against the file's own
header. Called by tests/cli/model_out.rs: check_old_safetensors.py DIR"""
import json
import struct
import sys
from pathlib import Path

import safetensors
from safetensors.numpy import load_file

assert safetensors.__version__.startswith("0.3."), safetensors.__version__
n = 0
for path in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    tensors = load_file(str(path))
    assert set(tensors) == set(header) - {"__metadata__"}, path
    for name, arr in tensors.items():
        a, b = header[name]["data_offsets"]
        assert list(arr.shape) == header[name]["shape"], name
        assert arr.tobytes() == raw[8 + hlen + a:8 + hlen + b], name
        n += 1
print(f"ok: safetensors {safetensors.__version__} read {n} tensors")
