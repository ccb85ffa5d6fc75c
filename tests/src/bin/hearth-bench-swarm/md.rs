//! Markdown pieces: tables, number formats, the command that produced a file.

/// A markdown table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        Self {
            header: header.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row (padded or cut to the header's width).
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Render with a header separator; `|` inside cells is escaped.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let c: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", c.join(" | "))
        };
        let mut s = line(&self.header);
        s.push_str(&line(&vec!["---".to_string(); self.header.len()]));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// An integer with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A ratio such as `138×` or `1.9×`.
pub fn ratio(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 100.0 {
        format!("{}×", thousands(r.round() as u64))
    } else if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

/// Signed percentage with one decimal: `+0.4 %`.
pub fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.1} %", x * 100.0)
    } else {
        "–".into()
    }
}

/// This process's command line, for the "command" line of a table.
pub fn this_command() -> String {
    let mut args = std::env::args();
    let exe = args
        .next()
        .map(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(a)
        })
        .unwrap_or_default();
    std::iter::once(exe)
        .chain(args.map(|a| {
            if a.is_empty() || a.contains(' ') {
                format!("'{a}'")
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(737280), "737,280");
        assert_eq!(thousands(12), "12");
        assert_eq!(ratio(138.4), "138×");
        assert_eq!(ratio(1.94), "1.9×");
        assert_eq!(ratio(24567.0), "24,567×");
        assert_eq!(pct(0.0123), "+1.2 %");
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into()]);
        t.row(vec!["x|y".into(), "2".into()]);
        assert_eq!(
            t.render(),
            "| a | b |\n| --- | --- |\n| 1 |  |\n| x\\|y | 2 |\n"
        );
    }
}
