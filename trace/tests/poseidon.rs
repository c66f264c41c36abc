//! The Poseidon parameters are the ones the Grain LFSR of the reference
//! script generates, and the permutation matches the reference
//! implementation's test vector.

use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField};
use zeromesh_trace::poseidon;

fn hex_of(element: &Fr) -> String {
    hex::encode(element.into_bigint().to_bytes_be())
}

#[test]
fn the_fixed_parameters_are_the_grain_lfsr_output_for_width_3_with_8_full_and_57_partial_rounds() {
    let (round_constants, mds) = ark_crypto_primitives::sponge::poseidon::find_poseidon_ark_and_mds::<Fr>(
        254,
        2,
        poseidon::FULL_ROUNDS as u64,
        poseidon::PARTIAL_ROUNDS as u64,
        0,
    );
    let fixed = poseidon::parameters();
    let generated_rounds: Vec<Vec<String>> = round_constants.iter().map(|r| r.iter().map(hex_of).collect()).collect();
    let generated_mds: Vec<Vec<String>> = mds.iter().map(|r| r.iter().map(hex_of).collect()).collect();
    let fixed_rounds: Vec<Vec<String>> = fixed.round_constants.iter().map(|r| r.iter().map(hex_of).collect()).collect();
    let fixed_mds: Vec<Vec<String>> = fixed.mds.iter().map(|r| r.iter().map(hex_of).collect()).collect();
    if generated_rounds != fixed_rounds || generated_mds != fixed_mds {
        let rows = |rows: &Vec<Vec<String>>| {
            rows.iter()
                .map(|row| {
                    format!("    [{}],\n", row.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", "))
                })
                .collect::<String>()
        };
        panic!(
            "poseidon_constants.rs differs from the generated parameters; generated:\n\
             pub(crate) const ROUND_CONSTANTS: [[&str; 3]; 65] = [\n{}];\n\
             pub(crate) const MDS: [[&str; 3]; 3] = [\n{}];\n",
            rows(&generated_rounds),
            rows(&generated_mds)
        );
    }
}

#[test]
fn the_permutation_matches_the_reference_implementations_vector() {
    // poseidonperm_x5_254_3 in the Poseidon paper's reference implementation
    // (also circomlib's poseidon([1, 2]) as the first element).
    let output = poseidon::permute([Fr::from(0u64), Fr::from(1u64), Fr::from(2u64)]);
    let expected = [
        "115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a",
        "0fca49b798923ab0239de1c9e7a4a9a2210312b6a2f616d18b5a87f9b628ae29",
        "0e7ae82e40091e63cbd4f16a6d16310b3729d4b6e138fcf54110e2867045a30c",
    ];
    assert_eq!(output.map(|e| hex_of(&e)), expected);
    assert_eq!(hex_of(&poseidon::hash2(Fr::from(1u64), Fr::from(2u64))), expected[0]);
}
