//! The demo task: translating short English sentences into Vesk, a small invented language.
//!
//! English sentences follow `[ADJ] NOUN VERB [ADJ] NOUN` over 20 words (8 nouns, 6 adjectives,
//! 6 verbs). Vesk has its own word for each and a fixed word order: the verb comes first, then
//! the subject, then the object, and an adjective follows its noun. So "big cat sees small dog"
//! is "pul kel dra vex vol" (see [`translate`]). The base model cannot know the lexicon (it is
//! invented), so it is weak here; held-out examples are new combinations of learned words and the
//! learned rule, so a few hundred LoRA steps measurably help. The 7·8·6·7·8 = 18,816 sentences
//! are drawn without replacement, so examples never repeat.

use std::io::Write;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::{Example, Message};

/// The invented language's name, as it appears in instructions.
pub const LANGUAGE: &str = "Vesk";

/// (English, Vesk) nouns.
pub const NOUNS: [(&str, &str); 8] = [
    ("cat", "kel"),
    ("dog", "vex"),
    ("bird", "pim"),
    ("fish", "sul"),
    ("horse", "fen"),
    ("child", "gor"),
    ("king", "lun"),
    ("wolf", "sab"),
];

/// (English, Vesk) adjectives.
pub const ADJECTIVES: [(&str, &str); 6] = [
    ("big", "dra"),
    ("small", "vol"),
    ("red", "pav"),
    ("old", "hob"),
    ("happy", "wob"),
    ("green", "vag"),
];

/// (English, Vesk) verbs.
pub const VERBS: [(&str, &str); 6] = [
    ("sees", "pul"),
    ("eats", "dex"),
    ("likes", "mur"),
    ("finds", "rel"),
    ("follows", "tul"),
    ("helps", "vor"),
];

/// Number of distinct sentences the grammar generates.
pub const SENTENCES: usize =
    (ADJECTIVES.len() + 1) * NOUNS.len() * VERBS.len() * (ADJECTIVES.len() + 1) * NOUNS.len();

/// One demo example: an instruction and its exact expected answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoExample {
    /// The user's request, e.g. `Vesk: big cat sees dog` (kept short: with SmolLM2's template and default system prompt an example is at most 47 tokens).
    pub instruction: String,
    /// The expected assistant answer, e.g. `pul kel dra vex`.
    pub answer: String,
}

impl DemoExample {
    /// The example as a two-turn chat (user instruction, assistant answer).
    pub fn to_example(&self) -> Example {
        Example::instruction(&self.instruction, None, &self.answer)
    }

    /// The prompt messages for generating the answer.
    pub fn prompt(&self) -> Vec<Message> {
        vec![Message::new("user", self.instruction.clone())]
    }
}

/// One sentence as word indices: (subject adjective, subject, verb, object adjective, object);
/// adjective index `ADJECTIVES.len()` means "no adjective".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sentence {
    subj_adj: usize,
    subj: usize,
    verb: usize,
    obj_adj: usize,
    obj: usize,
}

impl Sentence {
    /// The `index`-th sentence in a fixed enumeration of all [`SENTENCES`].
    fn nth(mut index: usize) -> Self {
        let mut next = |radix: usize| {
            let digit = index % radix;
            index /= radix;
            digit
        };
        let subj_adj = next(ADJECTIVES.len() + 1);
        let subj = next(NOUNS.len());
        let verb = next(VERBS.len());
        let obj_adj = next(ADJECTIVES.len() + 1);
        let obj = next(NOUNS.len());
        Self {
            subj_adj,
            subj,
            verb,
            obj_adj,
            obj,
        }
    }

    fn english(&self) -> String {
        let mut words = Vec::with_capacity(5);
        push_pair(&mut words, &ADJECTIVES, self.subj_adj, |p| p.0);
        push_pair(&mut words, &NOUNS, self.subj, |p| p.0);
        push_pair(&mut words, &VERBS, self.verb, |p| p.0);
        push_pair(&mut words, &ADJECTIVES, self.obj_adj, |p| p.0);
        push_pair(&mut words, &NOUNS, self.obj, |p| p.0);
        words.join(" ")
    }

    fn vesk(&self) -> String {
        let mut words = Vec::with_capacity(5);
        push_pair(&mut words, &VERBS, self.verb, |p| p.1);
        push_pair(&mut words, &NOUNS, self.subj, |p| p.1);
        push_pair(&mut words, &ADJECTIVES, self.subj_adj, |p| p.1);
        push_pair(&mut words, &NOUNS, self.obj, |p| p.1);
        push_pair(&mut words, &ADJECTIVES, self.obj_adj, |p| p.1);
        words.join(" ")
    }
}

fn push_pair<'a>(
    words: &mut Vec<&'a str>,
    table: &'a [(&'a str, &'a str)],
    index: usize,
    pick: impl Fn(&'a (&'a str, &'a str)) -> &'a str,
) {
    if let Some(pair) = table.get(index) {
        words.push(pick(pair));
    }
}

/// Translates an English sentence of the demo grammar into Vesk; `None` if it is not one.
pub fn translate(english: &str) -> Option<String> {
    (0..SENTENCES)
        .map(Sentence::nth)
        .find(|s| s.english() == english.trim())
        .map(|s| s.vesk())
}

/// `n` distinct examples (at most [`SENTENCES`]), drawn without replacement by `seed`.
pub fn generate(n: usize, seed: u64) -> Vec<DemoExample> {
    let mut order: Vec<usize> = (0..SENTENCES).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
        .into_iter()
        .take(n)
        .map(Sentence::nth)
        .map(|s| DemoExample {
            instruction: format!("{LANGUAGE}: {}", s.english()),
            answer: s.vesk(),
        })
        .collect()
}

#[derive(Serialize)]
struct Row<'a> {
    instruction: &'a str,
    output: &'a str,
}

/// Writes [`generate`]`(n, seed)` as JSONL rows `{"instruction": .., "output": ..}`.
pub fn write_jsonl(path: &Path, n: usize, seed: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for ex in generate(n, seed) {
        let row = Row {
            instruction: &ex.instruction,
            output: &ex.answer,
        };
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Whether a generated answer matches the expected one, ignoring surrounding whitespace.
pub fn exact_match(predicted: &str, answer: &str) -> bool {
    predicted.trim() == answer.trim()
}
