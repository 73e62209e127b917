"""Writes the hand-made reproducers of the pickle reader's failures into
tests/fuzz_regressions/pickle/ (replayed by tests/cli/errors.rs `fuzz_regressions_stay_fixed`, against tests/fuzz_regressions/expected.tsv).

Each was confirmed against the `pickle` fuzz target (see the fuzzing report); the names say what
the input does. Run with any python3:  python3 fuzz/make_repros.py
"""

import io
import pathlib
import struct
import zipfile

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fuzz_regressions" / "pickle"

# torch.save's legacy stream starts with this pickled magic number (see src/checkpoint/pickle.rs).
MAGIC = bytes([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E])


def legacy(pickle):
    return MAGIC + pickle


def zipped(pickle, data=b"\0" * 24):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle)
        zf.writestr("archive/data/0", data)
    return buf.getvalue()


def uni(s):
    s = s.encode()
    return b"X" + struct.pack("<I", len(s)) + s


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def storage(offset_op):
    """_rebuild_tensor_v2((storage, FloatStorage, '0', 'cpu', 6), offset, (3, 2), (2, 1))."""
    pers = b"(" + uni("storage") + glob("torch", "FloatStorage") + uni("0") + uni("cpu") + b"K\x06tQ"
    return glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pers + offset_op + b"K\x03K\x02\x86K\x02K\x01\x86tR"


def state_dict(value):
    return b"\x80\x02}" + uni("w") + value + b"s."


# torch.save({'w': torch.zeros(3, 2, dtype=torch.uint8)}, f, _use_new_zipfile_serialization=False)
# with torch 2.15: five pickles, then the storage as an i64 element count (6) and 6 bytes.
U8_LEGACY = bytes.fromhex(
    "80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f766572"
    "73696f6e71014de903580d0000006c6974746c655f656e6469616e710288580a000000747970655f73697a65"
    "7371037d710428580500000073686f727471054b025803000000696e7471064b0458040000006c6f6e677107"
    "4b0475752e80027d7100580100000077710163746f7263682e5f7574696c730a5f72656275696c645f74656e"
    "736f725f76320a71022828580700000073746f72616765710363746f7263680a4279746553746f726167650a"
    "7104580e00000039343736313539323337333038387105580300000063707571064b064e747107514b004b03"
    "4b028671084b024b018671098963636f6c6c656374696f6e730a4f726465726564446963740a710a2952710b"
    "74710c52710d732e80025d7100580e00000039343736313539323337333038387101612e0600000000000000"
    "000000000000"
)


def legacy_u8_numel_overflow():
    """The uint8 checkpoint above with its storage claiming 2^64-1 elements (1 byte each)."""
    assert U8_LEGACY[-14:-6] == (6).to_bytes(8, "little")
    return U8_LEGACY[:-14] + b"\xff" * 8 + U8_LEGACY[-6:]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    files = {
        # Still failing at the time of writing.
        "legacy-storage-numel-overflow.bin": legacy_u8_numel_overflow(),
        "legacy-memo-bomb-under-budget.bin": legacy(
            b"\x80\x02]q\x00" + b"h\x00h\x00\x86q\x00" * 15 + b"h\x00" * 758 + b"."),
        "legacy-memo-clones-long-string.bin": legacy(
            b"\x80\x02(X" + struct.pack("<I", 32768) + b"a" * 32768 + b"q\x00" + b"h\x00" * 70000 + b"t."),
        # Fixed by the pickle budget check (src/checkpoint/pickle_guard.rs).
        "legacy-tuple1-nesting-20000.bin": legacy(b"\x80\x02)" + b"\x85" * 20000 + b"."),
        "zip-tuple1-nesting-20000.bin": zipped(b"\x80\x02)" + b"\x85" * 20000 + b"."),
        "legacy-memo-bomb-40-doublings.bin": legacy(b"\x80\x02]q\x00" + b"(h\x00h\x00tq\x00" * 40 + b"."),
        "zip-memo-bomb-40-doublings.bin": zipped(b"\x80\x02]q\x00" + b"(h\x00h\x00tq\x00" * 40 + b"."),
        "legacy-binunicode-claims-4gib.bin": legacy(b"\x80\x02X\xff\xff\xff\xffabc"),
        "legacy-long1-9-bytes.bin": legacy(b"\x80\x02\x8a\x09" + b"\x01" * 9 + b"."),
        # Panics inside candle that `guarded` catches (crashes only under panic=abort).
        "caught-zip-rebuild-tensor-v2-no-args.bin": zipped(
            state_dict(glob("torch._utils", "_rebuild_tensor_v2") + b")R")),
        "caught-zip-rebuild-from-type-v2-1-tuple.bin": zipped(
            state_dict(glob("torch._tensor", "_rebuild_from_type_v2") + b"K\x01\x85R")),
        "caught-zip-rebuild-parameter-no-args.bin": zipped(
            state_dict(glob("torch._utils", "_rebuild_parameter") + b")R")),
        "caught-zip-storage-2-tuple.bin": zipped(state_dict(
            glob("torch._utils", "_rebuild_tensor_v2") + b"((" + uni("storage") + glob("torch", "FloatStorage")
            + b"tQK\x00K\x03K\x02\x86K\x02K\x01\x86tR")),
        "caught-zip-negative-storage-offset.bin": zipped(state_dict(storage(b"\x8a\x08" + b"\xff" * 8))),
    }
    for name, data in files.items():
        (OUT / name).write_bytes(data)
        print(f"{len(data):>8}  {name}")


if __name__ == "__main__":
    main()
