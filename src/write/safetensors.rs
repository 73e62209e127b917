//! The one safetensors header writer, for the files a batch writes (the `--output` matrix,
//! finetune's head) and the model directory's shards (`emit::weights`, `format: pt`): tensors
//! with a sorted `__metadata__`, so the same inputs give the same bytes.

use crate::dtype::DType;
use std::collections::BTreeMap;

/// One tensor to write: name, element type, shape, little-endian bytes.
pub struct TensorOut<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// The header bytes of `tensors` (see [`header`]).
pub(super) fn header_for(
    tensors: &[TensorOut<'_>],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    // The byte length follows from shape and dtype; `data` may be empty when the bytes are
    // written later through a map.
    let entries: Vec<Entry<'_>> = tensors
        .iter()
        .map(|t| Entry {
            name: t.name,
            dtype: t.dtype.safetensors_name(),
            shape: &t.shape,
            len: t.shape.iter().product::<usize>() * t.dtype.size(),
        })
        .collect();
    header(&entries, metadata)
}

/// One tensor of a header: its name, safetensors dtype name (`F32`, `I64`, ...), shape and byte
/// length.
pub(crate) struct Entry<'a> {
    pub name: &'a str,
    pub dtype: &'a str,
    pub shape: &'a [usize],
    pub len: usize,
}

/// The header bytes: u64 LE length, then JSON padded with spaces to a multiple of 8. Keys are
/// sorted (serde_json's map is a BTreeMap without the preserve_order feature); data follows in the
/// order given.
pub(crate) fn header(entries: &[Entry<'_>], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut root = serde_json::Map::new();
    if !metadata.is_empty() {
        root.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0;
    for t in entries {
        root.insert(
            t.name.into(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.len],
            }),
        );
        offset += t.len;
    }
    let mut json = serde_json::to_vec(&root).unwrap_or_default();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_sorted_padded_and_readable_by_safetensors() {
        let mut meta = BTreeMap::new();
        meta.insert("z".to_string(), "1".to_string());
        meta.insert("a".to_string(), "2".to_string());
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = TensorOut {
            name: "weight",
            dtype: DType::F32,
            shape: vec![2, 3],
            data: &data,
        };
        let mut file = header_for(&[t], &meta);
        assert_eq!((file.len() - 8) % 8, 0);
        file.extend_from_slice(&data);
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let t = st.tensor("weight").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data(), &data[..]);
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let json = std::str::from_utf8(&file[8..8 + n]).unwrap();
        assert!(json.find("\"a\"").unwrap() < json.find("\"z\"").unwrap());
    }
}
