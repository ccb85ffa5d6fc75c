//! Tokenizers: SmolLM-style byte-level BPE built from GGUF metadata, `tokenizer.json`, or a
//! byte-level vocabulary for the tiny preset. Special tokens are explicit: nothing is added to an
//! encoding implicitly (no BOS/EOS post-processing).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::AddedToken;

use crate::error::{ModelError, Result};

/// A tokenizer with explicit special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer(vocab={})", self.vocab_size())
    }
}

fn tk_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// GPT-2's reversible byte → printable-char map used by byte-level BPE.
pub fn byte_to_char() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        if let (Some(slot), Some(ch)) = (out.get_mut(b as usize), char::from_u32(c)) {
            *slot = ch;
        }
    }
    out
}

fn smollm_pre_tokenizer() -> PreTokenizerWrapper {
    PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))
}

impl Tokenizer {
    /// Builds the BPE from GGUF `tokenizer.ggml.tokens`/`merges`; `specials` are the ids of
    /// control/user-defined tokens, matched verbatim in text.
    pub fn from_bpe_parts(tokens: &[String], merges: &[String], specials: &[u32]) -> Result<Self> {
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(ModelError::Tokenizer(format!(
                "{} tokens but only {} distinct",
                tokens.len(),
                vocab.len()
            )));
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| ModelError::Tokenizer(format!("merge {m:?} has no space")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tk_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(smollm_pre_tokenizer()));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|&id| {
                tokens
                    .get(id as usize)
                    .map(|s| AddedToken::from(s.clone(), true))
                    .ok_or_else(|| ModelError::Tokenizer(format!("special id {id} out of range")))
            })
            .collect::<Result<_>>()?;
        inner.add_special_tokens(added).map_err(tk_err)?;
        Ok(Self { inner })
    }

    /// A byte-level tokenizer: ids 0..256 are bytes, then `specials` in order.
    pub fn byte_level(specials: &[&str]) -> Result<Self> {
        let map = byte_to_char();
        let mut tokens: Vec<String> = map.iter().map(|c| c.to_string()).collect();
        tokens.extend(specials.iter().map(|s| s.to_string()));
        let ids: Vec<u32> = (256..tokens.len() as u32).collect();
        let mut t = Self::from_bpe_parts(&tokens, &[], &ids)?;
        t.inner
            .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                false, true, false,
            ))));
        Ok(t)
    }

    /// Loads a Hugging Face `tokenizer.json` (at most 64 MiB).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_bounded(path, 64 << 20)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| tk_err(format!("{}: {e}", path.display())))?;
        Ok(Self { inner })
    }

    /// Writes `tokenizer.json`.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    /// Token ids of `text`; special-token strings in the text map to their ids, nothing is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// Id of a token string, if in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_and_keeps_specials() {
        let t = Tokenizer::byte_level(&["<|endoftext|>", "<|im_start|>", "<|im_end|>"]).unwrap();
        assert_eq!(t.vocab_size(), 259);
        let ids = t.encode("hé 1<|im_end|>").unwrap();
        assert_eq!(ids, vec![104, 195, 169, 32, 49, 258]);
        assert_eq!(t.decode(&ids).unwrap(), "hé 1<|im_end|>");
        assert_eq!(t.token_id("<|im_start|>"), Some(257));
    }

    #[test]
    fn bpe_merges_and_splits_digits() {
        let mut tokens: Vec<String> = byte_to_char().iter().map(|c| c.to_string()).collect();
        tokens.push("ab".into());
        tokens.push("11".into());
        let merges = vec!["a b".to_string(), "1 1".to_string()];
        let t = Tokenizer::from_bpe_parts(&tokens, &merges, &[]).unwrap();
        assert_eq!(t.encode("ab").unwrap(), vec![256]);
        // digits are split one by one before BPE, so "11" never merges
        assert_eq!(t.encode("11").unwrap(), vec![49, 49]);
    }
}
