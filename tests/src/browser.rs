//! Headless Chromium for the dashboard tests, and a little HTML reading.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::proc::Proc;

/// Headless Chromium: `$HEARTH_CHROMIUM`, else Debian's `/usr/bin/chromium` (or `chromium-browser`).
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether browser tests must run (`HEARTH_REQUIRE_BROWSER=1`, set by .ci/run) instead of skipping.
pub fn browser_required() -> bool {
    std::env::var("HEARTH_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// Run headless Chromium on `url` with `args` added, after `budget_ms` of virtual time for the
/// page's scripts, with a fresh profile. Returns its stdout.
pub fn run_chromium(url: &str, budget_ms: u64, args: &[&str]) -> Result<String> {
    use std::io::Read;
    let browser = chromium().ok_or_else(|| anyhow!("chromium is not installed"))?;
    let profile = tempfile::tempdir()?;
    let child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", browser.display()))?;
    let mut proc = Proc {
        child,
        label: "chromium".into(),
    };
    // Read stdout on a thread so that a large DOM cannot block the browser on a full pipe.
    let stdout = proc.child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = stdout {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let code = proc.wait_timeout(Duration::from_secs(90))?;
    let out = reader
        .join()
        .map_err(|_| anyhow!("chromium output reader panicked"))?;
    if code != 0 {
        return Err(anyhow!("chromium exited with {code} on {url}"));
    }
    Ok(out)
}

/// The page's DOM after its scripts ran for `budget_ms` of virtual time.
pub fn dump_dom(url: &str, budget_ms: u64) -> Result<String> {
    run_chromium(url, budget_ms, &["--dump-dom"])
}

/// A PNG screenshot of the page (`width`×`height`) at `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    run_chromium(
        url,
        4000,
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={width},{height}"),
        ],
    )?;
    let len = std::fs::metadata(path)
        .with_context(|| format!("no screenshot at {}", path.display()))?
        .len();
    if len < 1000 {
        return Err(anyhow!(
            "screenshot {} has only {len} bytes",
            path.display()
        ));
    }
    Ok(())
}

/// Text of the element with `id="ID"` in serialised HTML: everything up to its closing tag,
/// with tags stripped (nested elements of other names are fine; same-name nesting is not).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html.get(..at)?.rfind('<')?;
    let name: String = html
        .get(tag_start + 1..)?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let body_start = at + html.get(at..)?.find('>')? + 1;
    let body_len = html.get(body_start..)?.find(&format!("</{name}>"))?;
    let inner = html.get(body_start..body_start + body_len)?;
    let mut text = String::new();
    let mut in_tag = false;
    for c in inner.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(text.trim().to_string())
}

/// The value of attribute `attr` on the element with `id="ID"` in serialised HTML.
pub fn element_attr(html: &str, id: &str, attr: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html.get(..at)?.rfind('<')?;
    let tag_end = at + html.get(at..)?.find('>')?;
    let tag = html.get(tag_start..tag_end)?;
    let key = format!(" {attr}=\"");
    let v = tag.get(tag.find(&key)? + key.len()..)?;
    Some(v.get(..v.find('"')?)?.to_string())
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
