//! Fuzzes the JWT verifier and the JWK-set parser with arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_auth::jwt::{Alg, Key, KeyMaterial, Verifier, parse_jwks, unverified_subject};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = Verifier {
        alg: Alg::HS256,
        keys: vec![Key {
            kid: None,
            material: KeyMaterial::Hmac(b"0123456789abcdef0123456789abcdef".to_vec()),
        }],
        issuer: None,
        audience: None,
        leeway_secs: 60,
    };
    // Without the secret no input can be a valid token.
    assert!(verifier.verify(text, 1_800_000_000).is_err());
    let _ = unverified_subject(text);
    for alg in [Alg::HS256, Alg::RS256, Alg::ES256, Alg::EdDSA] {
        let _ = parse_jwks(text, alg);
    }
});
