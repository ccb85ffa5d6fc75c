//! Held-out evaluation and PEFT export of candidate checkpoints on the coordinator's copy of the model.

use std::path::Path;

use hearth_model::{
    candle_core::{DType, Device},
    spec, Model, PeftConfig, Sequence,
};
use hearth_proto::{NamedTensor, RunSpec};

/// The base model with the run's LoRA layout, plus the held-out split (which never leaves here).
pub struct Evaluator {
    model: Model,
    tokenizer: hearth_model::Tokenizer,
    template: Option<hearth_model::data::ChatTemplate>,
    eos: u32,
    peft: PeftConfig,
    validation: Vec<Sequence>,
    batch: usize,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Evaluator({} validation sequences)",
            self.validation.len()
        )
    }
}

impl Evaluator {
    /// Load the run's base model (`model_file` for GGUF/HF runs, none for the tiny preset).
    pub fn load(
        run: &RunSpec,
        model_file: Option<&Path>,
        validation: Vec<Sequence>,
        batch: usize,
    ) -> hearth_model::Result<Self> {
        let source = spec::model_source(&run.base.source, model_file);
        let base = hearth_model::load_base(&source, &Device::Cpu, DType::F32)?;
        let lora = spec::lora_config(&run.lora)?;
        let model = base.model(Some(&lora))?;
        let peft = PeftConfig::from_lora(&lora, &run.base.name);
        let template = spec::chat_template(&base).ok();
        Ok(Self {
            model,
            tokenizer: base.tokenizer.clone(),
            template,
            eos: base.eos_token_id,
            peft,
            validation,
            batch: batch.max(1),
        })
    }

    /// The freshly initialised trainable adapter (B = 0; A seeded), i.e. checkpoint 0.
    pub fn initial_params(&self) -> hearth_model::Result<Vec<NamedTensor>> {
        self.model.adapter_tensors()
    }

    /// Mean held-out token loss with `params` as the trainable adapter.
    pub fn loss(&mut self, params: &[NamedTensor]) -> hearth_model::Result<f64> {
        self.model.set_adapter(params)?;
        Ok(hearth_model::evaluate(&self.model, &self.validation, self.batch)?.loss)
    }

    /// Mean loss on `data` of the checkpoint `params` and its gradient with respect to the
    /// trainable adapter, flattened in layout order (the screen's reference for a round).
    pub fn gradient(
        &mut self,
        params: &[NamedTensor],
        data: &[Sequence],
    ) -> hearth_model::Result<(f64, Vec<f32>)> {
        self.model.set_adapter(params)?;
        hearth_model::loss_gradient(&self.model, data, self.batch)
    }

    /// Greedy exact-match accuracy of `params` on demo-task examples (chat prompt → answer).
    pub fn exact_match(
        &mut self,
        params: &[NamedTensor],
        examples: &[hearth_model::demo::DemoExample],
    ) -> hearth_model::Result<f64> {
        let template = self.template.as_ref().ok_or_else(|| {
            hearth_model::ModelError::Config("the model has no chat template".into())
        })?;
        self.model.set_adapter(params)?;
        let mut hits = 0usize;
        for ex in examples {
            let prompt = template
                .render(&ex.prompt(), true, 0)
                .map_err(|e| hearth_model::ModelError::Input(e.to_string()))?;
            let ids = self.tokenizer.encode(&prompt)?;
            let max_new = self.tokenizer.encode(&ex.answer)?.len() + 2;
            let out = hearth_model::generate_greedy(&self.model, &ids, max_new, Some(self.eos))?;
            let text = self.tokenizer.decode(&out)?;
            let text = text.split("<|im_end|>").next().unwrap_or_default();
            if hearth_model::demo::exact_match(text, &ex.answer) {
                hits += 1;
            }
        }
        Ok(hits as f64 / examples.len().max(1) as f64)
    }

    /// Write `params` (with the frozen A matrices) as a PEFT adapter directory.
    pub fn export(&mut self, params: &[NamedTensor], dir: &Path) -> hearth_model::Result<()> {
        self.model.set_adapter(params)?;
        let all = self.model.all_adapter_tensors()?;
        hearth_model::peft::export_peft(dir, &self.peft, &all)
    }
}
