//! JWT verification with the algorithm pinned by configuration.
//!
//! The token's `alg` must equal the configured one exactly (so `none`, in
//! any capitalisation, and algorithm confusion such as HS256 signed with an
//! RSA public key are refused); `kid` selects only among configured keys;
//! `crit` is refused; duplicate JSON keys are refused; `exp` is required and
//! `exp`/`nbf` are checked with a leeway; `iss` and `aud` must match exactly.
//! No key material is ever fetched.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sha2::Sha256;

/// The algorithms Tollgate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "HS256" => Some(Alg::HS256),
            "RS256" => Some(Alg::RS256),
            "ES256" => Some(Alg::ES256),
            "EdDSA" => Some(Alg::EdDSA),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }
}

/// Verification key material.
pub enum KeyMaterial {
    Hmac(Vec<u8>),
    Rsa(rsa::pkcs1v15::VerifyingKey<Sha256>),
    Ec(p256::ecdsa::VerifyingKey),
    Ed(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str(match self {
            KeyMaterial::Hmac(_) => "Hmac(..)",
            KeyMaterial::Rsa(_) => "Rsa(..)",
            KeyMaterial::Ec(_) => "Ec(..)",
            KeyMaterial::Ed(_) => "Ed(..)",
        })
    }
}

#[derive(Debug)]
pub struct Key {
    pub kid: Option<String>,
    pub material: KeyMaterial,
}

/// Everything verification needs.
#[derive(Debug)]
pub struct Verifier {
    pub alg: Alg,
    pub keys: Vec<Key>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

/// Why a token was refused. Internal only: clients get one generic answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    Algorithm,
    Critical,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    MissingExpiry,
    Issuer,
    Audience,
    NoSubject,
}

/// The verified claims Tollgate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    pub scopes: Vec<String>,
}

/// A JSON object that refuses duplicate keys.
struct Unique(BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Unique;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object without duplicate keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
                Ok(Unique(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)
}

fn decode_json(part: &str) -> Result<BTreeMap<String, Value>, JwtError> {
    let bytes = decode_part(part)?;
    serde_json::from_slice::<Unique>(&bytes)
        .map(|u| u.0)
        .map_err(|_| JwtError::Malformed)
}

/// The unverified `sub` of a token, used only to count failed attempts
/// against an account; never as an identity.
pub fn unverified_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    decode_json(payload)
        .ok()?
        .get("sub")?
        .as_str()
        .map(str::to_owned)
}

impl Verifier {
    /// Verifies `token` at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = decode_json(h)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed)?;
        if alg.eq_ignore_ascii_case("none") || alg != self.alg.name() {
            return Err(JwtError::Algorithm);
        }
        if header.contains_key("crit") {
            return Err(JwtError::Critical);
        }
        let key = match header.get("kid") {
            Some(Value::String(kid)) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or(JwtError::UnknownKey)?,
            Some(_) => return Err(JwtError::Malformed),
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(JwtError::UnknownKey),
        };
        let signature = decode_part(s)?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        verify_signature(&key.material, signed, &signature)?;

        let claims = decode_json(p)?;
        let time = |name: &str| -> Result<Option<u64>, JwtError> {
            match claims.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .map(Some)
                    .ok_or(JwtError::Malformed),
                Some(_) => Err(JwtError::Malformed),
            }
        };
        let exp = time("exp")?.ok_or(JwtError::MissingExpiry)?;
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = time("nbf")?
            && now.saturating_add(self.leeway_secs) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(iss) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
        {
            return Err(JwtError::Issuer);
        }
        if let Some(aud) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == aud,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
                _ => false,
            };
            if !ok {
                return Err(JwtError::Audience);
            }
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::NoSubject)?
            .to_owned();
        let scopes = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Claims { subject, scopes })
    }
}

fn verify_signature(key: &KeyMaterial, signed: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    use signature::Verifier as _;
    let ok = match key {
        KeyMaterial::Hmac(secret) => {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).map_err(|_| JwtError::Signature)?;
            mac.update(signed);
            // Constant-time comparison.
            mac.verify_slice(sig).is_ok()
        }
        KeyMaterial::Rsa(k) => rsa::pkcs1v15::Signature::try_from(sig)
            .map(|s| k.verify(signed, &s).is_ok())
            .unwrap_or(false),
        KeyMaterial::Ec(k) => p256::ecdsa::Signature::from_slice(sig)
            .map(|s| k.verify(signed, &s).is_ok())
            .unwrap_or(false),
        KeyMaterial::Ed(k) => ed25519_dalek::Signature::from_slice(sig)
            .map(|s| k.verify_strict(signed, &s).is_ok())
            .unwrap_or(false),
    };
    if ok { Ok(()) } else { Err(JwtError::Signature) }
}

/// One JSON Web Key, as configured (RFC 7517).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    k: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

fn b64(field: &Option<String>, what: &str) -> Result<Vec<u8>, String> {
    let v = field.as_deref().ok_or(format!("missing `{what}`"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| format!("`{what}` is not base64url"))
}

/// Parses a configured JWK set into keys for `alg`. Every key must suit it.
pub fn parse_jwks(text: &str, alg: Alg) -> Result<Vec<Key>, String> {
    let jwks: Jwks = serde_json::from_str(text).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in jwks.keys.into_iter().enumerate() {
        let ctx = |e: String| format!("key {i}: {e}");
        if let Some(a) = &jwk.alg
            && a != alg.name()
        {
            return Err(ctx(format!(
                "alg `{a}` differs from the configured {}",
                alg.name()
            )));
        }
        let material = match (alg, jwk.kty.as_str()) {
            (Alg::HS256, "oct") => {
                let k = b64(&jwk.k, "k").map_err(ctx)?;
                if k.len() < 32 {
                    return Err(ctx("HS256 secrets must be at least 32 bytes".into()));
                }
                KeyMaterial::Hmac(k)
            }
            (Alg::RS256, "RSA") => {
                let n = rsa::BigUint::from_bytes_be(&b64(&jwk.n, "n").map_err(ctx)?);
                let e = rsa::BigUint::from_bytes_be(&b64(&jwk.e, "e").map_err(ctx)?);
                let key =
                    rsa::RsaPublicKey::new(n, e).map_err(|e| ctx(format!("bad RSA key: {e}")))?;
                if rsa::traits::PublicKeyParts::size(&key) < 256 {
                    return Err(ctx("RSA keys must be at least 2048 bits".into()));
                }
                KeyMaterial::Rsa(rsa::pkcs1v15::VerifyingKey::new(key))
            }
            (Alg::ES256, "EC") if jwk.crv.as_deref() == Some("P-256") => {
                let mut point = vec![4u8];
                point.extend(b64(&jwk.x, "x").map_err(ctx)?);
                point.extend(b64(&jwk.y, "y").map_err(ctx)?);
                KeyMaterial::Ec(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| ctx("bad P-256 point".into()))?,
                )
            }
            (Alg::EdDSA, "OKP") if jwk.crv.as_deref() == Some("Ed25519") => {
                let x: [u8; 32] = b64(&jwk.x, "x")
                    .map_err(ctx)?
                    .try_into()
                    .map_err(|_| ctx("Ed25519 keys are 32 bytes".into()))?;
                KeyMaterial::Ed(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| ctx("bad Ed25519 key".into()))?,
                )
            }
            (_, kty) => return Err(ctx(format!("a `{kty}` key cannot verify {}", alg.name()))),
        };
        keys.push(Key {
            kid: jwk.kid,
            material,
        });
    }
    if keys.is_empty() {
        return Err("the JWK set has no keys".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

    fn b64j(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn hs256_sign(header: &str, payload: &str, key: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn hs_token(header: Value, claims: Value) -> String {
        let (h, p) = (b64j(&header), b64j(&claims));
        let s = hs256_sign(&h, &p, SECRET);
        format!("{h}.{p}.{s}")
    }

    fn claims() -> Value {
        json!({"sub": "alice", "exp": NOW + 300, "nbf": NOW - 10, "iss": "https://issuer.test", "aud": "api", "scope": "read write"})
    }

    fn hs_verifier() -> Verifier {
        Verifier {
            alg: Alg::HS256,
            keys: vec![Key {
                kid: Some("k1".into()),
                material: KeyMaterial::Hmac(SECRET.to_vec()),
            }],
            issuer: Some("https://issuer.test".into()),
            audience: Some("api".into()),
            leeway_secs: 30,
        }
    }

    #[test]
    fn a_good_hs256_token_verifies() {
        let t = hs_token(json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}), claims());
        let c = hs_verifier().verify(&t, NOW).unwrap();
        assert_eq!(c.subject, "alice");
        assert_eq!(c.scopes, vec!["read", "write"]);
    }

    #[test]
    fn alg_none_is_refused_in_every_capitalisation() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = b64j(&json!({"alg": alg, "kid": "k1"}));
            let p = b64j(&claims());
            for sig in ["", "AAAA"] {
                let t = format!("{h}.{p}.{sig}");
                assert_eq!(
                    hs_verifier().verify(&t, NOW),
                    Err(JwtError::Algorithm),
                    "{alg} {sig:?}"
                );
            }
        }
    }

    #[test]
    fn a_different_algorithm_is_refused_even_when_validly_signed() {
        // HS384-labelled token: not the pinned algorithm.
        let t = hs_token(json!({"alg": "HS384", "kid": "k1"}), claims());
        assert_eq!(hs_verifier().verify(&t, NOW), Err(JwtError::Algorithm));
    }

    #[test]
    fn time_and_audience_classes() {
        let v = hs_verifier();
        let mut c = claims();
        c["exp"] = json!(NOW - 31);
        assert_eq!(
            v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW),
            Err(JwtError::Expired)
        );
        let mut c = claims();
        c["exp"] = json!(NOW - 29); // inside the leeway
        assert!(v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW).is_ok());
        let mut c = claims();
        c["nbf"] = json!(NOW + 31);
        assert_eq!(
            v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW),
            Err(JwtError::NotYetValid)
        );
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW),
            Err(JwtError::MissingExpiry)
        );
        let mut c = claims();
        c["exp"] = json!("9999999999");
        assert_eq!(
            v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW),
            Err(JwtError::Malformed)
        );
        let mut c = claims();
        c["iss"] = json!("https://issuer.test/");
        assert_eq!(
            v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW),
            Err(JwtError::Issuer)
        );
        let mut c = claims();
        c["aud"] = json!(["other", "API"]);
        assert_eq!(
            v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW),
            Err(JwtError::Audience)
        );
        let mut c = claims();
        c["aud"] = json!(["other", "api"]);
        assert!(v.verify(&hs_token(json!({"alg": "HS256"}), c), NOW).is_ok());
    }

    #[test]
    fn kid_selects_only_configured_keys() {
        let t = hs_token(json!({"alg": "HS256", "kid": "k2"}), claims());
        assert_eq!(hs_verifier().verify(&t, NOW), Err(JwtError::UnknownKey));
        // A jku/x5u/jwk pointing elsewhere is ignored, never fetched: the
        // configured key still decides.
        let t = hs_token(
            json!({"alg": "HS256", "kid": "k1", "jku": "https://evil.test/jwks", "jwk": {"kty": "oct", "k": "AAAA"}}),
            claims(),
        );
        assert!(hs_verifier().verify(&t, NOW).is_ok());
    }

    #[test]
    fn crit_is_refused() {
        let t = hs_token(json!({"alg": "HS256", "crit": ["exp"], "exp": 1}), claims());
        assert_eq!(hs_verifier().verify(&t, NOW), Err(JwtError::Critical));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = hs_token(json!({"alg": "HS256"}), claims());
        let (h, rest) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("{h}=.{rest}"), // padding is not base64url-nopad
            format!("{h}.{}", rest.replace('.', "+.")), // '+' is not base64url
            format!("!!!.{rest}"),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
        ] {
            assert!(hs_verifier().verify(&bad, NOW).is_err(), "{bad}");
        }
        // A tampered payload breaks the signature.
        let (hp, sig) = good.rsplit_once('.').unwrap();
        let (h, _) = hp.split_once('.').unwrap();
        let mut c = claims();
        c["sub"] = json!("mallory");
        let forged = format!("{h}.{}.{sig}", b64j(&c));
        assert_eq!(hs_verifier().verify(&forged, NOW), Err(JwtError::Signature));
    }

    #[test]
    fn duplicate_json_keys_are_refused() {
        let h = b64j(&json!({"alg": "HS256"}));
        let dup_payload = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"alice","exp":{},"sub":"admin","iss":"https://issuer.test","aud":"api"}}"#,
            NOW + 300
        ));
        let s = hs256_sign(&h, &dup_payload, SECRET);
        assert_eq!(
            hs_verifier().verify(&format!("{h}.{dup_payload}.{s}"), NOW),
            Err(JwtError::Malformed)
        );
        let dup_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","alg":"none"}"#);
        let p = b64j(&claims());
        let s = hs256_sign(&dup_header, &p, SECRET);
        assert_eq!(
            hs_verifier().verify(&format!("{dup_header}.{p}.{s}"), NOW),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn rs256_verifies_and_hs256_signed_with_the_public_key_is_refused() {
        use rsa::pkcs1v15::SigningKey;
        use rsa::traits::PublicKeyParts;
        use signature::{SignatureEncoding, Signer};
        let mut rng = rand::thread_rng();
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = private.to_public_key();
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "r1",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())}]});
        let v = Verifier {
            alg: Alg::RS256,
            keys: parse_jwks(&jwks.to_string(), Alg::RS256).unwrap(),
            issuer: None,
            audience: None,
            leeway_secs: 0,
        };
        let h = b64j(&json!({"alg": "RS256", "kid": "r1"}));
        let p = b64j(&claims());
        let signer = SigningKey::<Sha256>::new(private);
        let sig = signer.sign(format!("{h}.{p}").as_bytes());
        let token = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert_eq!(v.verify(&token, NOW).unwrap().subject, "alice");

        // The classic confusion attack: HS256 keyed with the public key.
        use rsa::pkcs8::EncodePublicKey;
        let pem = public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        for key_bytes in [pem.as_bytes().to_vec(), public.n().to_bytes_be()] {
            let h = b64j(&json!({"alg": "HS256", "kid": "r1"}));
            let s = hs256_sign(&h, &p, &key_bytes);
            assert_eq!(
                v.verify(&format!("{h}.{p}.{s}"), NOW),
                Err(JwtError::Algorithm)
            );
        }
    }

    #[test]
    fn es256_and_eddsa_verify() {
        use signature::Signer;
        // ES256
        let sk = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
        let point = sk.verifying_key().to_encoded_point(false);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())}]});
        let v = Verifier {
            alg: Alg::ES256,
            keys: parse_jwks(&jwks.to_string(), Alg::ES256).unwrap(),
            issuer: None,
            audience: None,
            leeway_secs: 0,
        };
        let h = b64j(&json!({"alg": "ES256"}));
        let p = b64j(&claims());
        let sig: p256::ecdsa::Signature = sk.sign(format!("{h}.{p}").as_bytes());
        let t = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert!(v.verify(&t, NOW).is_ok());
        assert_eq!(
            v.verify(
                &t.replace(&p, &b64j(&json!({"sub": "x", "exp": NOW + 5}))),
                NOW
            ),
            Err(JwtError::Signature)
        );

        // EdDSA
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(sk.verifying_key().to_bytes())}]});
        let v = Verifier {
            alg: Alg::EdDSA,
            keys: parse_jwks(&jwks.to_string(), Alg::EdDSA).unwrap(),
            issuer: None,
            audience: None,
            leeway_secs: 0,
        };
        let h = b64j(&json!({"alg": "EdDSA"}));
        let sig = sk.sign(format!("{h}.{p}").as_bytes());
        let t = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert!(v.verify(&t, NOW).is_ok());
        // An ES256-labelled token is refused by an EdDSA verifier.
        let h2 = b64j(&json!({"alg": "ES256"}));
        assert_eq!(
            v.verify(&format!("{h2}.{p}.AAAA"), NOW),
            Err(JwtError::Algorithm)
        );
    }

    #[test]
    fn jwks_must_suit_the_pinned_algorithm() {
        let oct =
            json!({"keys": [{"kty": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET)}]}).to_string();
        assert!(parse_jwks(&oct, Alg::HS256).is_ok());
        assert!(
            parse_jwks(&oct, Alg::RS256)
                .unwrap_err()
                .contains("cannot verify RS256")
        );
        let short = json!({"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}).to_string();
        assert!(
            parse_jwks(&short, Alg::HS256)
                .unwrap_err()
                .contains("32 bytes")
        );
        let mislabelled =
            json!({"keys": [{"kty": "oct", "alg": "HS512", "k": URL_SAFE_NO_PAD.encode(SECRET)}]})
                .to_string();
        assert!(parse_jwks(&mislabelled, Alg::HS256).is_err());
    }
}
