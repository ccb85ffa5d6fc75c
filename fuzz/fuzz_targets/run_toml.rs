//! `run.toml`: parsed and validated as `hearth-coordinator run --config` reads it; a valid config
//! must survive a round trip through the commented TOML `init` writes.
#![no_main]

use std::path::Path;

use hearth_coordinator::config::RunConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = RunConfig::from_toml(text, Path::new("run.toml")) else {
        return;
    };
    let _ = cfg.run.adapter_layout();
    let _ = cfg.run.spec_id();
    if let Ok(out) = cfg.to_commented_toml() {
        let back =
            RunConfig::from_toml(&out, Path::new("run.toml")).expect("written config reads back");
        assert_eq!(back.to_commented_toml().ok(), Some(out));
    }
});
