//! A real byte-level BPE tokenizer without merges: one token per byte, plus named special tokens.
//! Useful for the `tiny` preset and tests, where the SmolLM2 vocabulary is not needed.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::DataError;

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(256 + extra).unwrap_or('?');
                extra += 1;
                c
            }
        })
        .collect()
}

/// Builds a byte-level tokenizer: `specials[i]` gets id `i`, byte `b` gets id `specials.len() + b`.
/// Specials are registered as special added tokens, so they are recognised in text.
pub fn byte_level_tokenizer(specials: &[&str]) -> Result<Tokenizer, DataError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| DataError::Tokenize {
        line: 0,
        message: e.to_string(),
    };
    let base = specials.len() as u32;
    let vocab: Vocab = specials
        .iter()
        .enumerate()
        .map(|(i, s)| ((*s).to_string(), i as u32))
        .chain(
            byte_chars()
                .into_iter()
                .enumerate()
                .map(|(b, c)| (c.to_string(), base + b as u32)),
        )
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .map_err(err)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .add_special_tokens(specials.iter().map(|s| AddedToken::from(*s, true)))
        .map_err(err)?;
    Ok(tokenizer)
}
