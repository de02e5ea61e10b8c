//! The report: rows, BENCHMARKS.md and benchmarks.svg.

use framegate_e2e::repo_root;

use crate::sections;

/// One line of the report.
#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) id: &'static str,
    pub(crate) what: String,
    pub(crate) framegate: String,
    pub(crate) other: String,
    /// framegate's advantage as the goal states it (higher is better).
    pub(crate) ratio: f64,
    pub(crate) ratio_text: String,
    pub(crate) goal: f64,
    pub(crate) goal_text: &'static str,
}

// One argument per report column reads best at the call sites.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row(
    id: &'static str,
    what: impl Into<String>,
    fg: String,
    other: String,
    ratio: f64,
    ratio_text: String,
    goal: f64,
    goal_text: &'static str,
) -> Row {
    Row {
        id,
        what: what.into(),
        framegate: fg,
        other,
        ratio,
        ratio_text,
        goal,
        goal_text,
    }
}

pub(crate) fn write_report(rows: &[Row], notes: &[String], elapsed: f64) {
    let mut md = String::from(
        "# Benchmarks\n\nWritten by `cargo run --release -p framegate-bench` (every comparison measured side by side in the same run, \
         medians of repeated runs, on the 2-core CI-class machine; loopback unless stated). Ratios are framegate's standing against \
         the goal: higher is better for speed, lower for bytes and memory.\n\n![ratios against goals](benchmarks.svg)\n\n\
         | id | what | framegate | compared with | result | goal | met |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let met = if r.goal <= 0.0 {
            "—"
        } else if r.ratio >= r.goal {
            "yes"
        } else {
            "**no**"
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.id, r.what, r.framegate, r.other, r.ratio_text, r.goal_text, met
        ));
    }
    for note in notes {
        md.push_str(&format!("\n{note}\n"));
    }
    md.push_str(&format!("\nTotal run time: {elapsed:.0} s.\n"));
    // The sections the other bench binaries wrote stay.
    let old = std::fs::read_to_string(repo_root().join("BENCHMARKS.md")).unwrap_or_default();
    md.push_str(&sections::sections(&old));
    std::fs::write(repo_root().join("BENCHMARKS.md"), md).unwrap();
    std::fs::write(repo_root().join("benchmarks.svg"), svg(rows)).unwrap();
}

/// A bar per line: its standing relative to its goal (1.0 = exactly the goal).
fn svg(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.goal > 0.0).collect();
    let (w, bar_h, left) = (760.0, 26.0, 90.0);
    let h = 40.0 + bar_h * rows.len() as f64 + 30.0;
    let max = rows
        .iter()
        .map(|r| r.ratio / r.goal)
        .fold(2.0_f64, f64::max)
        .min(20.0);
    let scale = |v: f64| left + (w - left - 20.0) * (v.min(max) / max);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{left}" y="20">standing against the goal (goal = 1, bar to the right is better; capped at {max:.0})</text>"##
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 34.0 + bar_h * i as f64;
        let v = r.ratio / r.goal;
        let color = if v >= 1.0 { "#3a7d44" } else { "#c0392b" };
        s.push_str(&format!(r##"<text x="8" y="{}">{}</text><rect x="{left}" y="{y}" width="{:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{}">{}</text>"##, y + 16.0, r.id, scale(v) - left, bar_h - 6.0, scale(v) + 4.0, y + 16.0, r.ratio_text));
    }
    let gx = scale(1.0);
    s.push_str(&format!(r##"<line x1="{gx:.1}" y1="28" x2="{gx:.1}" y2="{}" stroke="black" stroke-dasharray="4 3"/><text x="{:.1}" y="{}">goal</text></svg>"##, h - 20.0, gx - 12.0, h - 6.0));
    s
}
