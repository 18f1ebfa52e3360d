#!/usr/bin/env python3
"""Copies a GGUF, every tensor dequantized to F32 by llama.cpp's own NumPy reference
(gguf-py, gguf/quants.py), all metadata unchanged.

    dequant_to_f32.py GGUF_PY_DIR IN.gguf OUT.gguf

llama.cpp evaluating OUT with f32 activations is an independent reference for our runner
evaluating IN: our quantized matmuls keep the activations in f32, so both compute the
same function of the same weights, and their logits must agree to f32 rounding.
"""
import sys


def main():
    gguf_py, src, dst = sys.argv[1:4]
    sys.path.insert(0, gguf_py)
    import numpy as np
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    alignment = reader.fields.get("general.alignment")
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    datas = []
    for t in reader.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            d = np.asarray(t.data, dtype=np.float32)
        else:
            d = dequantize(t.data, t.tensor_type).astype(np.float32)
        # ggml order ne0..neN; numpy shape is reversed
        d = d.reshape(tuple(int(x) for x in reversed(t.shape)))
        datas.append(d)
        writer.add_tensor_info(t.name, d.shape, d.dtype, d.nbytes, gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for d in datas:
        writer.write_tensor_data(d)
    writer.close()


if __name__ == "__main__":
    main()
