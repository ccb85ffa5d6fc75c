//! Run-spec overrides for `demo` (and the benchmarks): codec, outer optimizer, local steps,
//! learning rate, round target, and any other run.toml setting with `--set key=value`.

use anyhow::{anyhow, bail, Context, Result};
use hearth_proto::{CodecSpec, OuterOptimizer};

use crate::config::RunConfig;

/// Settings layered over a preset's run.toml before the run starts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunOverrides {
    /// Delta codec: f32, f16, int8 or topk:DENSITY:BITS (DENSITY as 0.015625 or 1/64).
    #[arg(long, value_parser = parse_codec)]
    pub codec: Option<CodecSpec>,
    /// Outer optimizer: nesterov:LR:MOMENTUM or average:LR.
    #[arg(long, value_parser = parse_outer)]
    pub outer: Option<OuterOptimizer>,
    /// Local AdamW steps per round (H).
    #[arg(long)]
    pub local_steps: Option<u32>,
    /// Inner (AdamW) peak learning rate.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Accepted deltas that close a round (after the grace period).
    #[arg(long)]
    pub target_deltas: Option<u32>,
    /// Any run.toml setting as a dotted key and a TOML value, e.g.
    /// `--set run.aggregate.deadline_secs=120` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, toml::Value)>,
}

/// Parses `f32`, `f16`, `int8` or `topk:DENSITY:BITS`.
pub fn parse_codec(s: &str) -> Result<CodecSpec> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let spec = match parts.as_slice() {
        ["f32"] => CodecSpec::F32,
        ["f16"] => CodecSpec::F16,
        ["int8"] => CodecSpec::Int8,
        ["topk" | "top_k", density, bits] => CodecSpec::TopK {
            density: parse_fraction(density)?,
            bits: bits
                .parse()
                .with_context(|| format!("bits {bits:?} is not a number"))?,
        },
        _ => bail!("codec {s:?}: expected f32, f16, int8 or topk:DENSITY:BITS"),
    };
    spec.validate().map_err(|e| anyhow!("codec {s:?}: {e}"))?;
    Ok(spec)
}

/// Parses `0.015625` or `1/64`.
fn parse_fraction(s: &str) -> Result<f32> {
    let v = match s.split_once('/') {
        Some((n, d)) => {
            let n: f64 = n
                .parse()
                .with_context(|| format!("{s:?} is not a fraction"))?;
            let d: f64 = d
                .parse()
                .with_context(|| format!("{s:?} is not a fraction"))?;
            if d == 0.0 {
                bail!("{s:?} divides by zero");
            }
            n / d
        }
        None => s
            .parse::<f64>()
            .with_context(|| format!("{s:?} is not a number"))?,
    };
    Ok(v as f32)
}

/// Parses `nesterov:LR:MOMENTUM` or `average:LR`.
pub fn parse_outer(s: &str) -> Result<OuterOptimizer> {
    let num = |v: &str| -> Result<f32> {
        v.parse()
            .with_context(|| format!("outer {s:?}: {v:?} is not a number"))
    };
    let outer = match s.trim().split(':').collect::<Vec<_>>().as_slice() {
        ["nesterov", lr, momentum] => OuterOptimizer::Nesterov {
            lr: num(lr)?,
            momentum: num(momentum)?,
        },
        ["average", lr] => OuterOptimizer::Average { lr: num(lr)? },
        _ => bail!("outer {s:?}: expected nesterov:LR:MOMENTUM or average:LR"),
    };
    Ok(outer)
}

/// Short label of an outer optimizer, the inverse of [`parse_outer`].
pub fn outer_label(o: &OuterOptimizer) -> String {
    match o {
        OuterOptimizer::Nesterov { lr, momentum } => format!("nesterov:{lr}:{momentum}"),
        OuterOptimizer::Average { lr } => format!("average:{lr}"),
    }
}

/// Parses `dotted.key=VALUE`; VALUE is TOML (`120`, `0.5`, `true`, `"text"`, `{ kind = "f16" }`),
/// and a bare word that is not TOML is taken as a string.
pub fn parse_set(s: &str) -> Result<(String, toml::Value)> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {s:?}: expected KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {s:?}: empty key segment");
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

impl RunOverrides {
    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.codec.is_none()
            && self.outer.is_none()
            && self.local_steps.is_none()
            && self.lr.is_none()
            && self.target_deltas.is_none()
            && self.set.is_empty()
    }

    /// Apply to `cfg` and validate the result. `--set` keys must already exist in the config
    /// (a typo is an error, not a silently ignored setting).
    pub fn apply(&self, cfg: &mut RunConfig) -> Result<()> {
        let run = &mut cfg.run;
        if let Some(c) = self.codec {
            run.aggregate.codec = c;
        }
        if let Some(o) = self.outer {
            run.aggregate.outer = o;
        }
        if let Some(h) = self.local_steps {
            run.train.local_steps = h;
        }
        if let Some(lr) = self.lr {
            run.train.lr = lr;
        }
        if let Some(t) = self.target_deltas {
            run.aggregate.target_deltas = t;
            run.aggregate.min_deltas = run.aggregate.min_deltas.min(t.max(1));
        }
        if !self.set.is_empty() {
            let mut value = toml::Value::try_from(&*cfg).context("serialising run.toml")?;
            for (key, v) in &self.set {
                set_dotted(&mut value, key, v.clone())?;
            }
            *cfg = value
                .try_into()
                .map_err(|e| anyhow!("run.toml after --set: {e}"))?;
        }
        cfg.run.validate().context("run spec after overrides")?;
        Ok(())
    }
}

/// Replace the existing setting at `key` (dotted path of tables) with `v`.
fn set_dotted(root: &mut toml::Value, key: &str, v: toml::Value) -> Result<()> {
    let mut node = root;
    let mut segments = key.split('.').peekable();
    while let Some(seg) = segments.next() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {key}: {seg:?} is not inside a table"))?;
        if segments.peek().is_none() {
            if !table.contains_key(seg) {
                bail!("--set {key}: no such setting in run.toml");
            }
            table.insert(seg.to_string(), v);
            return Ok(());
        }
        node = table
            .get_mut(seg)
            .ok_or_else(|| anyhow!("--set {key}: no table {seg:?} in run.toml"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_parse() {
        assert_eq!(parse_codec("f16").unwrap(), CodecSpec::F16);
        assert_eq!(
            parse_codec("topk:1/64:2").unwrap(),
            CodecSpec::TopK {
                density: 0.015625,
                bits: 2
            }
        );
        assert_eq!(
            parse_codec("topk:0.25:8").unwrap(),
            CodecSpec::TopK {
                density: 0.25,
                bits: 8
            }
        );
        assert!(parse_codec("topk:1/64:3").is_err());
        assert!(parse_codec("topk:2:2").is_err());
        assert!(parse_codec("topk:1/0:2").is_err());
        assert!(parse_codec("gzip").is_err());
    }

    #[test]
    fn outer_parses_and_round_trips() {
        for s in ["nesterov:0.7:0.9", "average:1"] {
            assert_eq!(outer_label(&parse_outer(s).unwrap()), s);
        }
        assert!(parse_outer("nesterov:0.7").is_err());
        assert!(parse_outer("adam:1").is_err());
    }

    #[test]
    fn overrides_apply_and_validate() {
        let mut cfg = RunConfig::default();
        let o = RunOverrides {
            codec: Some(CodecSpec::Int8),
            outer: Some(OuterOptimizer::Average { lr: 1.0 }),
            local_steps: Some(77),
            lr: Some(0.01),
            target_deltas: Some(6),
            set: vec![
                parse_set("run.aggregate.deadline_secs=123").unwrap(),
                parse_set("run.train.grad_clip=0.5").unwrap(),
            ],
        };
        o.apply(&mut cfg).unwrap();
        assert_eq!(cfg.run.aggregate.codec, CodecSpec::Int8);
        assert_eq!(cfg.run.train.local_steps, 77);
        assert_eq!(cfg.run.aggregate.target_deltas, 6);
        assert_eq!(cfg.run.aggregate.deadline_secs, 123);
        assert_eq!(cfg.run.train.grad_clip, 0.5);
        assert_eq!(cfg.run.train.lr, 0.01);
    }

    #[test]
    fn unknown_or_invalid_settings_are_errors() {
        let mut cfg = RunConfig::default();
        let typo = RunOverrides {
            set: vec![parse_set("run.train.local_stepz=3").unwrap()],
            ..Default::default()
        };
        assert!(typo.apply(&mut cfg).is_err());
        let bad = RunOverrides {
            local_steps: Some(0),
            ..Default::default()
        };
        assert!(bad.apply(&mut cfg).is_err());
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("a..b=1").is_err());
    }
}
