//! Poseidon over BN254's scalar field: width 3, x^5 S-box, 8 full and 57
//! partial rounds, the parameters of the Poseidon paper's reference
//! implementation (`poseidonperm_x5_254_3`), also used by circomlib.
//!
//! The round constants and the MDS matrix are fixed in
//! `poseidon_constants.rs`. They were generated with the Grain LFSR of the
//! paper's reference script, as arkworks implements it
//! (`ark_crypto_primitives::sponge::poseidon::find_poseidon_ark_and_mds`
//! with 254 prime bits, rate 2, 8 full rounds, 57 partial rounds, no skipped
//! matrices); `tests/poseidon.rs` regenerates them and checks the
//! permutation against the reference implementation's test vector.

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_ff::{Field, PrimeField};

use crate::poseidon_constants::{MDS, ROUND_CONSTANTS};

/// Elements of the permuted state.
pub const WIDTH: usize = 3;
pub const FULL_ROUNDS: usize = 8;
pub const PARTIAL_ROUNDS: usize = 57;
pub const ROUNDS: usize = FULL_ROUNDS + PARTIAL_ROUNDS;
const _: () = assert!(ROUND_CONSTANTS.len() == ROUNDS && MDS.len() == WIDTH);

/// The parameters as field elements.
pub struct Parameters {
    pub round_constants: [[Fr; WIDTH]; ROUNDS],
    pub mds: [[Fr; WIDTH]; WIDTH],
}

fn element(hex_text: &str) -> Fr {
    let bytes = hex::decode(hex_text).expect("the fixed Poseidon constants are hex");
    Fr::from_be_bytes_mod_order(&bytes)
}

/// The fixed parameters, decoded once.
pub fn parameters() -> &'static Parameters {
    static PARAMETERS: OnceLock<Parameters> = OnceLock::new();
    PARAMETERS.get_or_init(|| Parameters {
        round_constants: ROUND_CONSTANTS.map(|round| round.map(element)),
        mds: MDS.map(|row| row.map(element)),
    })
}

/// Whether round `round` applies the S-box to the whole state.
pub fn is_full_round(round: usize) -> bool {
    !(FULL_ROUNDS / 2..FULL_ROUNDS / 2 + PARTIAL_ROUNDS).contains(&round)
}

fn sbox(x: Fr) -> Fr {
    let square = x.square();
    square.square() * x
}

/// The Poseidon permutation of `state`.
pub fn permute(mut state: [Fr; WIDTH]) -> [Fr; WIDTH] {
    let parameters = parameters();
    for (round, constants) in parameters.round_constants.iter().enumerate() {
        for (element, constant) in state.iter_mut().zip(constants) {
            *element += constant;
        }
        if is_full_round(round) {
            state = state.map(sbox);
        } else {
            state[0] = sbox(state[0]);
        }
        state = parameters.mds.map(|row| row.iter().zip(&state).map(|(m, x)| *m * x).sum());
    }
    state
}

/// Poseidon of two elements as circomlib defines it: the first element of
/// the permutation of `[0, left, right]`.
pub fn hash2(left: Fr, right: Fr) -> Fr {
    permute([Fr::from(0u64), left, right])[0]
}
