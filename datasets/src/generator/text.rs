//! The text generator: lines of 5 to 15 words drawn from a Zipf
//! distribution (exponent 1) over a 50,000-word vocabulary, separated by
//! single spaces; the shape of the W1 word-count baseline.

use std::collections::HashSet;

use rand::{RngExt, SeedableRng};
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;
use rand_pcg::Pcg64Mcg;

use super::BlockGen;

/// Words in the vocabulary.
pub(crate) const VOCABULARY: usize = 50_000;

/// Makes Zipf-distributed text.
pub(crate) struct TextGen {
    words: Vec<Vec<u8>>,
    zipf: WeightedAliasIndex<f64>,
}

impl TextGen {
    /// The vocabulary and its distribution for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x05EE_D0F7_0CAB);
        let mut seen = HashSet::with_capacity(VOCABULARY);
        let mut words = Vec::with_capacity(VOCABULARY);
        while words.len() < VOCABULARY {
            // Short words are common; lengths 1..=12, mostly 3..=8.
            let len = 1 + rng.random_range(0..6) + rng.random_range(0..7);
            let word: Vec<u8> = (0..len).map(|_| b'a' + rng.random_range(0..26u8)).collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let weights = (1..=VOCABULARY).map(|r| 1.0 / r as f64).collect();
        let zipf = WeightedAliasIndex::new(weights).expect("valid weights");
        TextGen { words, zipf }
    }
}

impl BlockGen for TextGen {
    fn block(&self, rng: &mut Pcg64Mcg, _first_row: u64, rows: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>) {
        for _ in 0..rows {
            let n = rng.random_range(5..=15);
            for i in 0..n {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(&self.words[self.zipf.sample(rng)]);
            }
            out.push(b'\n');
            ends.push(out.len());
        }
    }
}
