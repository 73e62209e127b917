//! Element types of embedding tensors and conversions between them (shared by the readers, the
//! pure core and the writer).

/// The float types an embedding may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
        }
    }

    /// The name safetensors headers use.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
        }
    }

    pub fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F64 => Some(DType::F64),
            _ => None,
        }
    }

    /// Decodes little-endian elements into f32 (f64 is narrowed).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            DType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            DType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            DType::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            DType::F64 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    *o = f64::from_le_bytes(a) as f32;
                }
            }
        }
    }

    /// Encodes f32 values as little-endian elements of this type.
    pub fn encode(self, values: &[f32], out: &mut [u8]) {
        match self {
            DType::F32 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            DType::F16 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                    o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            DType::BF16 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                    o.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
                }
            }
            DType::F64 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(8)) {
                    o.copy_from_slice(&(*v as f64).to_le_bytes());
                }
            }
        }
    }

    /// [`DType::encode`], returning true when a finite value became infinite (overflow).
    pub fn encode_checked(self, values: &[f32], out: &mut [u8]) -> bool {
        self.encode(values, out);
        match self {
            DType::F32 | DType::F64 => false,
            DType::F16 => values
                .iter()
                .any(|v| v.is_finite() && half::f16::from_f32(*v).is_infinite()),
            DType::BF16 => values
                .iter()
                .any(|v| v.is_finite() && half::bf16::from_f32(*v).is_infinite()),
        }
    }

    /// Whether every value of these little-endian bytes is finite: a value is NaN or infinite
    /// exactly when its exponent bits are all ones. No early exit, so the loop vectorises.
    pub fn all_finite(self, bytes: &[u8]) -> bool {
        fn none_all_ones<const N: usize>(bytes: &[u8], mask: u64) -> bool {
            let bad = bytes.chunks_exact(N).fold(false, |bad, b| {
                let mut a = [0u8; 8];
                a[..N].copy_from_slice(b);
                bad | (u64::from_le_bytes(a) & mask == mask)
            });
            !bad
        }
        match self {
            DType::F32 => none_all_ones::<4>(bytes, 0x7f80_0000),
            DType::F16 => none_all_ones::<2>(bytes, 0x7c00),
            DType::BF16 => none_all_ones::<2>(bytes, 0x7f80),
            DType::F64 => none_all_ones::<8>(bytes, 0x7ff0_0000_0000_0000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exponent-mask test agrees with each type's own is_finite on the values that matter.
    #[test]
    fn all_finite_agrees_with_the_float_types() {
        let vals = [
            0.0f64,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            1e-40,
            3.4e38,
            1e300,
            1e-310,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for v in vals {
            let cases: [(DType, Vec<u8>, bool); 4] = [
                (DType::F64, v.to_le_bytes().to_vec(), v.is_finite()),
                (
                    DType::F32,
                    (v as f32).to_le_bytes().to_vec(),
                    (v as f32).is_finite(),
                ),
                (
                    DType::F16,
                    half::f16::from_f64(v).to_le_bytes().to_vec(),
                    half::f16::from_f64(v).is_finite(),
                ),
                (
                    DType::BF16,
                    half::bf16::from_f64(v).to_le_bytes().to_vec(),
                    half::bf16::from_f64(v).is_finite(),
                ),
            ];
            for (dtype, bytes, finite) in cases {
                assert_eq!(dtype.all_finite(&bytes), finite, "{dtype:?} {v}");
                // Among finite values (1.5 in this type), at the end of a row.
                let mut one = vec![0u8; dtype.size()];
                dtype.encode(&[1.5], &mut one);
                let mut row = one.repeat(7);
                row.extend_from_slice(&bytes);
                assert_eq!(dtype.all_finite(&row), finite, "{dtype:?} row of {v}");
            }
        }
    }
}
