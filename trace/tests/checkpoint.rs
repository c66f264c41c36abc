//! Checkpoints as C2SP signed notes, cosigned by voters: a majority
//! verifies; any altered byte, a missing majority or a malformed note fails
//! with its reason.

use ed25519_dalek::SigningKey;
use zeromesh_trace::checkpoint::{majority, Checkpoint, SignedCheckpoint};
use zeromesh_trace::merkle::{self, Hash};
use zeromesh_trace::note::{self, Note, NoteError, NoteVerifier};

fn voter(seed: u8) -> (String, SigningKey, NoteVerifier) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let name = format!("voter-{seed}");
    let verifier = NoteVerifier::new(&name, key.verifying_key()).unwrap();
    (name, key, verifier)
}

fn checkpoint() -> Checkpoint {
    Checkpoint { origin: "zeromesh/test".into(), size: 42, root: merkle::leaf_hash(b"root") }
}

fn cosigned(signers: &[u8]) -> SignedCheckpoint {
    let mut signed = SignedCheckpoint::unsigned(checkpoint()).unwrap();
    for seed in signers {
        let (name, key, _) = voter(*seed);
        signed.note.add(note::sign(&signed.note.text, &name, &key).unwrap()).unwrap();
    }
    signed
}

fn voters() -> Vec<NoteVerifier> {
    (1..=3).map(|seed| voter(seed).2).collect()
}

#[test]
fn a_checkpoint_cosigned_by_a_majority_round_trips_and_verifies() {
    let signed = cosigned(&[1, 3]);
    let text = signed.encode();
    assert!(text.starts_with("zeromesh/test\n42\n"));
    assert!(text.contains("\n\n\u{2014} voter-1 "));
    let parsed = SignedCheckpoint::parse(&text).unwrap();
    assert_eq!(parsed.checkpoint, checkpoint());
    assert_eq!(parsed.verify(&voters()).unwrap(), vec!["voter-1".to_owned(), "voter-3".to_owned()]);
    assert_eq!(majority(3), 2);
    assert_eq!(majority(4), 3);
}

#[test]
fn one_signature_of_three_voters_is_not_a_majority() {
    let signed = SignedCheckpoint::parse(&cosigned(&[2]).encode()).unwrap();
    assert_eq!(signed.verify(&voters()), Err(NoteError::NotEnoughSignatures { got: 1, needed: 2 }));
}

#[test]
fn signatures_by_unknown_keys_are_ignored_and_do_not_count() {
    let signed = SignedCheckpoint::parse(&cosigned(&[1, 7, 8]).encode()).unwrap();
    assert_eq!(signed.verify(&voters()), Err(NoteError::NotEnoughSignatures { got: 1, needed: 2 }));
}

#[test]
fn any_altered_byte_of_the_checkpoint_or_a_signature_fails_verification() {
    let text = cosigned(&[1, 2, 3]).encode();
    let body_length = checkpoint().body().len();
    for at in 0..text.len() {
        let mut bytes = text.clone().into_bytes();
        bytes[at] ^= 0x01;
        let Ok(altered) = String::from_utf8(bytes) else { continue };
        let outcome = SignedCheckpoint::parse(&altered).and_then(|signed| signed.verify(&voters()));
        match outcome {
            Err(_) => {}
            Ok(signers) => {
                // Flipping a bit in one signature's name or key id hides that
                // signature; the others still make a majority. The text
                // itself is never accepted altered.
                assert!(at > body_length, "altered byte {at} of the checkpoint body was accepted");
                assert_eq!(signers.len(), 2, "altered byte {at}");
            }
        }
    }
    // An altered root is named as a bad signature.
    let altered = text.replacen("42\n", "43\n", 1);
    assert_eq!(
        SignedCheckpoint::parse(&altered).unwrap().verify(&voters()),
        Err(NoteError::BadSignature { name: "voter-1".into() })
    );
}

#[test]
fn verifier_keys_round_trip_and_bad_ones_are_refused() {
    let (_, _, verifier) = voter(1);
    let text = verifier.encode();
    assert_eq!(NoteVerifier::parse(&text).unwrap(), verifier);
    let (name, id, key) = {
        let mut parts = text.splitn(3, '+');
        (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
    };
    assert!(NoteVerifier::parse(&format!("{name}+00000000+{key}")).is_err(), "wrong key id");
    assert!(NoteVerifier::parse(&format!("other+{id}+{key}")).is_err(), "id of another name");
    assert!(NoteVerifier::parse(&format!("{name}+{id}+AAAA")).is_err(), "short key");
    assert!(NoteVerifier::parse("no-plus-signs").is_err());
    assert!(NoteVerifier::new("has space", SigningKey::from_bytes(&[1; 32]).verifying_key()).is_err());
}

#[test]
fn malformed_notes_and_bodies_are_refused_with_a_reason() {
    let cases = [
        "zeromesh/test\n42\n",
        "zeromesh/test\n42\nAAAA\n\n\u{2014} voter-1 AAAA\n",
        "zeromesh/test\n042\nAAAA\n\n",
        &"x".repeat(note::MAX_NOTE_BYTES + 1),
    ];
    for case in cases {
        assert!(SignedCheckpoint::parse(case).is_err(), "{case:?} was accepted");
    }
    assert!(Checkpoint::parse_body("o\n01\nAAAA\n").is_err());
    assert!(Checkpoint::parse_body("o\n1\nAAAA\n").is_err(), "root of 3 bytes");
    let body = checkpoint().body();
    assert_eq!(Checkpoint::parse_body(&body).unwrap(), checkpoint());
    assert!(Checkpoint::parse_body(&format!("{body}extension\n")).is_err());
    assert!(Note::new("no newline").is_err());
    assert_eq!(Hash::from_hex("00").unwrap_err(), "a hash is 32 bytes, not 1");
}
