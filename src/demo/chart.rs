//! The chart: a hand-written SVG with one panel per metric against RL steps, one line per arm
//! (mean over seeds). Training metrics are smoothed by a trailing window of `steps / 25` steps
//! (pooled over seeds and the window); evaluation metrics are plotted as measured.

use std::fmt::Write as _;

use super::arm::{ArmKind, ArmRun, StepStats};
use super::eval::EvalResult;
use super::experiment::Experiment;

const W: f64 = 1200.0;
const H: f64 = 720.0;
const COLS: usize = 3;
const PANEL_W: f64 = W / COLS as f64;
const PANEL_H: f64 = 320.0;
const TOP: f64 = 60.0;
const MARGIN: (f64, f64, f64, f64) = (52.0, 16.0, 36.0, 40.0); // left, right, top, bottom

fn color(kind: ArmKind) -> &'static str {
    match kind {
        ArmKind::Grpo => "#1f77b4",
        ArmKind::Axpo => "#d62728",
        ArmKind::GrpoMatched => "#2ca02c",
    }
}

/// A per-step `(numerator, denominator)` of a training metric, pooled over seeds and windows.
type Pooled = fn(&StepStats) -> (f64, f64);

fn pooled_tool_rate(s: &StepStats) -> (f64, f64) {
    (s.diagnostics.tool_call_rate, 1.0)
}
fn pooled_all_wrong(s: &StepStats) -> (f64, f64) {
    (
        s.all_wrong_tool_subgroups as f64,
        s.diagnostics.groups_with_tool_use as f64,
    )
}
fn pooled_signal(s: &StepStats) -> (f64, f64) {
    if s.diagnostics.tool_call_tokens > 0 {
        (s.diagnostics.tool_call_signal, 1.0)
    } else {
        (0.0, 0.0)
    }
}

/// An evaluation metric.
type EvalMetric = fn(&EvalResult) -> f64;

/// A plotted line: `(x, y)` points.
type Line = Vec<(f64, f64)>;

fn runs_of(exp: &Experiment, kind: ArmKind) -> Vec<&ArmRun> {
    exp.seeds
        .iter()
        .flat_map(|s| s.arms.iter().filter(move |a| a.kind == kind))
        .collect()
}

fn training_line(runs: &[&ArmRun], f: Pooled, window: usize) -> Line {
    let steps = runs.iter().map(|r| r.steps.len()).min().unwrap_or(0);
    let per_step: Vec<(f64, f64)> = (0..steps)
        .map(|i| {
            runs.iter().fold((0.0, 0.0), |(a, b), r| {
                let (x, y) = f(&r.steps[i]);
                (a + x, b + y)
            })
        })
        .collect();
    (0..steps)
        .filter_map(|i| {
            let lo = (i + 1).saturating_sub(window);
            let (a, b) = per_step[lo..=i]
                .iter()
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            (b > 0.0).then(|| ((i + 1) as f64, a / b))
        })
        .collect()
}

fn eval_line(runs: &[&ArmRun], f: EvalMetric) -> Line {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .evals
        .iter()
        .enumerate()
        .filter_map(|(i, (step, _))| {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.evals.get(i).map(|e| f(&e.1)))
                .collect();
            (v.len() == runs.len()).then(|| (*step as f64, v.iter().sum::<f64>() / v.len() as f64))
        })
        .collect()
}

/// A round tick spacing (1, 2 or 5 times a power of ten) giving at most 6 intervals over
/// `span`.
fn nice_step(span: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn panel(svg: &mut String, index: usize, title: &str, lines: &[(ArmKind, Line)], max_x: f64) {
    let (ml, mr, mt, mb) = MARGIN;
    let x0 = (index % COLS) as f64 * PANEL_W + ml;
    let y0 = TOP + (index / COLS) as f64 * PANEL_H + mt;
    let (pw, ph) = (PANEL_W - ml - mr, PANEL_H - mt - mb);
    let ys = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (mut lo, mut hi) = if lo.is_finite() {
        ((lo * 10.0).floor() / 10.0, (hi * 10.0).ceil() / 10.0)
    } else {
        (0.0, 1.0)
    };
    lo = lo.clamp(0.0, 1.0);
    hi = hi.clamp(0.0, 1.0);
    if hi - lo < 0.1 {
        hi = (lo + 0.1).min(1.0);
        lo = hi - 0.1;
    }
    let px = |x: f64| x0 + x / max_x.max(1.0) * pw;
    let py = |y: f64| y0 + ph - (y - lo) / (hi - lo) * ph;
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        x0,
        y0 - 12.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0:.1}" y="{y0:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#888"/>"##
    );
    let ytick = nice_step(hi - lo);
    let first = (lo / ytick - 1e-9).ceil() as i32;
    let last = (hi / ytick + 1e-9).floor() as i32;
    for k in first..=last {
        let y = ytick * f64::from(k);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{y:.2}</text>"##,
            x0 + pw,
            py(y),
            py(y),
            x0 - 4.0,
            py(y) + 4.0
        );
    }
    let tick = nice_step(max_x);
    for k in 0..=((max_x / tick).floor() as u32) {
        let x = tick * f64::from(k);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{x:.0}</text>"#,
            px(x),
            y0 + ph + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">RL step</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 32.0
    );
    for (kind, line) in lines {
        if line.is_empty() {
            continue;
        }
        let pts: Vec<String> = line
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            color(*kind),
            pts.join(" ")
        );
    }
}

/// The SVG chart of an experiment.
#[must_use]
pub fn render(exp: &Experiment) -> String {
    let kinds: Vec<ArmKind> = ArmKind::ALL
        .into_iter()
        .filter(|k| !runs_of(exp, *k).is_empty())
        .collect();
    let steps = exp
        .seeds
        .iter()
        .flat_map(|s| s.arms.iter().map(|a| a.steps.len()))
        .max()
        .unwrap_or(0);
    let window = (steps / 25).max(1);
    let max_x = steps as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let seeds = match exp.seeds.as_slice() {
        [one] => format!("seed {}", one.seed),
        many => format!("{} seeds, mean over seeds", many.len()),
    };
    let _ = writeln!(
        svg,
        r#"<text x="16" y="24" font-size="16" font-weight="bold">axpo demo: {seeds} (training metrics: trailing mean over {window} step{})</text>"#,
        if window == 1 { "" } else { "s" },
    );
    let mut lx = 16.0;
    for k in &kinds {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="44" y2="44" stroke="{}" stroke-width="3"/><text x="{}" y="48" font-size="13">{}</text>"#,
            lx + 24.0,
            color(*k),
            lx + 30.0,
            k.name()
        );
        lx += 150.0;
    }
    let train: [(&str, Pooled); 3] = [
        ("Tool-call rate (train)", pooled_tool_rate),
        ("All-wrong tool-subgroup rate", pooled_all_wrong),
        ("Tool-call signal", pooled_signal),
    ];
    for (i, (title, f)) in train.iter().enumerate() {
        let lines: Vec<(ArmKind, Line)> = kinds
            .iter()
            .map(|&k| (k, training_line(&runs_of(exp, k), *f, window)))
            .collect();
        panel(&mut svg, i, title, &lines, max_x);
    }
    let evals: [(&str, EvalMetric); 3] = [
        ("Eval Pass@1", |e| e.pass1),
        ("Eval Pass@4", |e| e.pass4),
        ("Eval tool-call rate", |e| e.tool_call_rate),
    ];
    for (i, (title, f)) in evals.iter().enumerate() {
        let lines: Vec<(ArmKind, Line)> = kinds
            .iter()
            .map(|&k| (k, eval_line(&runs_of(exp, k), *f)))
            .collect();
        panel(&mut svg, 3 + i, title, &lines, max_x);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::nice_step;

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(150.0), 50.0);
        assert_eq!(nice_step(4.0), 1.0);
        assert_eq!(nice_step(12.0), 2.0);
        assert_eq!(nice_step(1000.0), 200.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert!((nice_step(0.7) - 0.2).abs() < 1e-12);
        assert!((nice_step(0.4) - 0.1).abs() < 1e-12);
    }
}
