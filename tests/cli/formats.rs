//! Checkpoint formats (safetensors, sharded, zip and legacy .bin, f64/f16/bf16) and PyTorch reading our output.

use crate::common::*;

#[test]
fn safetensors_zip_bin_and_legacy_bin_give_the_same_matrix() {
    let sb = Sandbox::new();
    let a = weight_of(&sb, &bert_dir(), &[], "a.safetensors");
    let b = weight_of(
        &sb,
        &bert_dir().join("pytorch_model.bin"),
        &[],
        "b.safetensors",
    );
    let c = weight_of(
        &sb,
        &fixtures().join("tiny-bert-chinese-legacy"),
        &[],
        "c.safetensors",
    );
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn sharded_bf16_checkpoint_and_dtype_conversion() {
    let sb = Sandbox::new();
    let dir = fixtures().join("tiny-llama-sharded");
    let (dtype, shape, _) = weight_of(&sb, &dir, &[], "a.safetensors");
    assert_eq!(dtype, "BF16");
    assert_eq!(shape[1], 16);
    let (dtype, _, data) = weight_of(&sb, &dir, &["--dtype", "f32"], "b.safetensors");
    assert_eq!(dtype, "F32");
    assert!(f32s(&data).iter().all(|v| v.is_finite()));
    let (dtype, _, _) = weight_of(&sb, &bert_dir(), &["--dtype", "f16"], "c.safetensors");
    assert_eq!(dtype, "F16");
    let (dtype, _, _) = weight_of(&sb, &bert_dir(), &["--dtype", "bf16"], "d.safetensors");
    assert_eq!(dtype, "BF16");
}

// ---------------------------------------------------------------- PyTorch interop

/// Loads the output in PyTorch with both documented idioms.
#[test]
#[ignore = "needs python: torch, safetensors (tests/check_torch.py)"]
fn pytorch_loads_the_output() {
    let python = python("torch, safetensors.torch");
    let sb = Sandbox::new();
    for (name, extra) in [
        ("f32.safetensors", "f32"),
        ("bf16.safetensors", "bf16"),
        ("f16.safetensors", "f16"),
    ] {
        sb.transplant(bert_dir())
            .args(["-o", name, "-q", "--dtype", extra])
            .assert()
            .success();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_torch.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(sb.dir.path())
        .arg(bert_dir())
        .arg(target_vocab())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn f64_and_f16_sources_are_read() {
    let sb = Sandbox::new();
    for (name, dtype, bytes) in [
        (
            "f64",
            "F64",
            [1.5f64, -2.0, 0.25, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            "f16",
            "F16",
            [1.5f32, -2.0, 0.25, 4.0]
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    ] {
        let dir = sb.path(name);
        std::fs::create_dir(&dir).unwrap();
        let header = format!(
            r#"{{"wte.weight":{{"dtype":"{dtype}","shape":[2,2],"data_offsets":[0,{}]}}}}"#,
            bytes.len()
        );
        raw_st(&dir.join("model.safetensors"), &header, &bytes);
        std::fs::write(dir.join("vocab.txt"), "a\nb\n").unwrap();
        let out = format!("{name}.safetensors");
        sb.cmd()
            .arg("-m")
            .arg(&dir)
            .args(["-v", "-", "-o", &out, "-q"])
            .write_stdin("b\na\n")
            .assert()
            .success();
        let st = read_st(&sb.path(&out));
        let (got_dtype, shape, data) = &st.tensors["weight"];
        assert_eq!((got_dtype.as_str(), shape.clone()), (dtype, vec![2, 2]));
        // Rows swapped, bit for bit.
        let half = bytes.len() / 2;
        assert_eq!(&data[..half], &bytes[half..]);
        assert_eq!(&data[half..], &bytes[..half]);
        let f32_out = format!("{name}-f32.safetensors");
        sb.cmd()
            .arg("-m")
            .arg(&dir)
            .args(["-v", "-", "-o", &f32_out, "-q", "--dtype", "f32"])
            .write_stdin("a\n")
            .assert()
            .success();
        assert_eq!(
            f32s(&read_st(&sb.path(&f32_out)).tensors["weight"].2),
            vec![1.5, -2.0]
        );
    }
}
