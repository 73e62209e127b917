//! `vocab::parse_target` on arbitrary bytes: an error or a token list, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = embed_transplant::api::vocab::parse_target(data, "fuzz") {
        assert!(!v.tokens.is_empty());
        assert!(v.duplicates < v.tokens.len());
        for t in &v.tokens {
            assert!(!t.is_empty() && !t.contains('\n') && !t.contains('\0'));
            assert!(t.len() <= embed_transplant::api::vocab::MAX_TOKEN_BYTES);
        }
    }
});
