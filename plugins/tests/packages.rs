//! Plugin packages: signing, and every refusal naming the check that failed.

use serde_json::json;
use zeromesh_plugins::{
    generate_signing_key, Capability, Manifest, Package, PackageError, PluginLimits, PublisherKey, ToolSpec,
};

fn manifest() -> Manifest {
    Manifest {
        name: "echo".into(),
        version: "1.0.0".into(),
        description: "Returns its arguments".into(),
        tools: vec![ToolSpec {
            name: "echo".into(),
            description: "echo".into(),
            input_schema: json!({"type": "object"}),
        }],
        capabilities: [Capability::Log].into(),
        limits: PluginLimits { fuel_per_call: 1_000_000, memory_bytes: 1 << 20, wall_clock_ms: 1000 },
        module_sha256: String::new(),
        expires_at_ms: None,
    }
}

const MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn a_signed_package_round_trips_and_verifies() {
    let key = generate_signing_key().unwrap();
    let package = Package::sign(MODULE.to_vec(), manifest(), &key).unwrap();
    let decoded = Package::decode(&package.encode()).unwrap();
    assert_eq!(decoded, package);
    let verified = decoded.verify(&[PublisherKey::of(&key)], 0).unwrap();
    assert_eq!(verified.manifest.name, "echo");
    assert_eq!(verified.publisher, PublisherKey::of(&key));
}

#[test]
fn one_changed_byte_anywhere_is_refused() {
    let key = generate_signing_key().unwrap();
    let trusted = [PublisherKey::of(&key)];
    let bytes = Package::sign(MODULE.to_vec(), manifest(), &key).unwrap().encode();
    for position in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[position] ^= 0x01;
        let verdict = Package::decode(&tampered).and_then(|package| package.verify(&trusted, 0));
        assert!(verdict.is_err(), "a flipped bit at byte {position} of {} was accepted", bytes.len());
    }
}

#[test]
fn a_tampered_module_is_refused_by_the_module_check() {
    let key = generate_signing_key().unwrap();
    let mut bytes = Package::sign(MODULE.to_vec(), manifest(), &key).unwrap().encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let error = Package::decode(&bytes).unwrap().verify(&[PublisherKey::of(&key)], 0).unwrap_err();
    assert!(matches!(error, PackageError::ModuleTampered { .. }), "{error}");
}

#[test]
fn a_tampered_manifest_is_refused_by_the_signature_check() {
    let key = generate_signing_key().unwrap();
    let bytes = Package::sign(MODULE.to_vec(), manifest(), &key).unwrap().encode();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let position = text.find("Returns").unwrap();
    let mut tampered = bytes.clone();
    tampered[position] = b'r';
    let error = Package::decode(&tampered).unwrap().verify(&[PublisherKey::of(&key)], 0).unwrap_err();
    assert!(matches!(error, PackageError::BadSignature(_)), "{error}");
}

#[test]
fn an_unsigned_package_is_refused_by_the_signature_check() {
    let key = generate_signing_key().unwrap();
    let mut bytes = Package::sign(MODULE.to_vec(), manifest(), &key).unwrap().encode();
    let signature_end = bytes.len() - MODULE.len() - 4;
    bytes[signature_end - 64..signature_end].fill(0);
    let error = Package::decode(&bytes).unwrap().verify(&[PublisherKey::of(&key)], 0).unwrap_err();
    assert!(matches!(error, PackageError::BadSignature(_)), "{error}");
}

#[test]
fn an_untrusted_publisher_is_refused_by_the_trust_check() {
    let key = generate_signing_key().unwrap();
    let other = generate_signing_key().unwrap();
    let package = Package::sign(MODULE.to_vec(), manifest(), &key).unwrap();
    let error = package.verify(&[PublisherKey::of(&other)], 0).unwrap_err();
    assert_eq!(error, PackageError::Untrusted(PublisherKey::of(&key)));
    assert!(error.to_string().contains("trust check failed"));
}

#[test]
fn an_expired_package_is_refused_by_the_expiry_check() {
    let key = generate_signing_key().unwrap();
    let package = Package::sign(MODULE.to_vec(), Manifest { expires_at_ms: Some(1_000), ..manifest() }, &key).unwrap();
    assert!(package.verify(&[PublisherKey::of(&key)], 999).is_ok());
    let error = package.verify(&[PublisherKey::of(&key)], 1_000).unwrap_err();
    assert!(matches!(error, PackageError::Expired { expired_at_ms: 1_000, .. }), "{error}");
}

#[test]
fn a_manifest_over_its_limits_cannot_be_signed() {
    let key = generate_signing_key().unwrap();
    let greedy =
        Manifest { limits: PluginLimits { fuel_per_call: u64::MAX, memory_bytes: 1, wall_clock_ms: 1 }, ..manifest() };
    assert!(matches!(Package::sign(MODULE.to_vec(), greedy, &key), Err(PackageError::InvalidManifest(_))));
    let nameless = Manifest { name: "no spaces".into(), ..manifest() };
    assert!(matches!(Package::sign(MODULE.to_vec(), nameless, &key), Err(PackageError::InvalidManifest(_))));
}
