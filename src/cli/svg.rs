//! `stoke analyze --svg`: one boot on a time axis, drawn by hand (SVG is text; a drawing
//! crate would weigh more than this file). Rows: the boot's own spans from `systemd-analyze`
//! when known, each stage (process start-up, config + datasource, modules), each module as a
//! bar in its outcome's colour, and the scripts and timed steps inside it as nested bars.
//! The critical path is outlined in red and joined by a line.

use std::fmt::Write as _;

use stoke_api::ScriptOutcome;

use crate::state::status::{ModState, Status};

/// The boot before stoke, as `systemd-analyze` tells it (seconds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BootSpans {
    pub firmware: Option<f64>,
    pub loader: Option<f64>,
    pub kernel: Option<f64>,
    pub initrd: Option<f64>,
    pub userspace: Option<f64>,
}

/// Reads `Startup finished in 2.1s (firmware) + 1.2s (loader) + 812ms (kernel) + 1.6s (initrd)
/// + 9.8s (userspace) = 15.5s`. `None` when the line is not there (boot not finished).
pub fn parse_systemd_analyze(text: &str) -> Option<BootSpans> {
    let line = text.lines().find(|l| l.contains("Startup finished in"))?;
    let body = line.split_once("Startup finished in")?.1;
    let body = body.split('=').next().unwrap_or(body);
    let mut spans = BootSpans::default();
    for part in body.split('+') {
        let part = part.trim();
        let (value, name) = part.split_once(" (")?;
        let secs = parse_span(value)?;
        match name.trim_end_matches(')') {
            "firmware" => spans.firmware = Some(secs),
            "loader" => spans.loader = Some(secs),
            "kernel" => spans.kernel = Some(secs),
            "initrd" => spans.initrd = Some(secs),
            "userspace" => spans.userspace = Some(secs),
            _ => {}
        }
    }
    Some(spans)
}

/// systemd's time spans: `1min 2.345s`, `812ms`, `1.6s`, `950us`.
fn parse_span(text: &str) -> Option<f64> {
    let mut total = 0.0;
    for word in text.split_whitespace() {
        let split = word.find(|c: char| c.is_ascii_alphabetic())?;
        let (n, unit) = word.split_at(split);
        let n: f64 = n.parse().ok()?;
        total += n * match unit {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "min" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
    }
    Some(total)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Boot,
    Startup,
    Prepare,
    Stage,
    Module(ModState),
    Step { failed: bool },
}

/// One row of the picture: times in seconds from the origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub start: f64,
    pub dur: f64,
    pub kind: Kind,
    /// 0 boot and stages, 1 modules, 2 steps inside modules.
    pub depth: u8,
    pub critical: bool,
    /// Drawn on the same row as the previous bar (a stage's start-up and prepare parts).
    pub same_row: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    pub title: String,
    /// What t = 0 is.
    pub origin: &'static str,
    pub bars: Vec<Bar>,
    /// Modules not drawn (skipped, disabled: they took no time).
    pub not_drawn: usize,
}

impl Timeline {
    /// The boot in `status`, with the spans before stoke when known. t = 0 is the kernel's
    /// start when the status recorded it, else the first stage's process start.
    pub fn of(status: &Status, boot: Option<&BootSpans>) -> Timeline {
        let first_exec = status
            .stages
            .values()
            .map(|s| s.started_unix - s.startup_ms.unwrap_or(0.0) / 1000.0)
            .reduce(f64::min)
            .unwrap_or(0.0);
        let (origin_unix, origin) = match status.kernel_started_unix {
            Some(k) => (k, "kernel start"),
            None => (first_exec, "stoke's first process start"),
        };
        let at = |unix: f64| unix - origin_unix;
        let mut bars = Vec::new();
        if let (Some(b), Some(_)) = (boot, status.kernel_started_unix) {
            // firmware and loader come before the kernel: negative times.
            let before = b.loader.unwrap_or(0.0) + b.firmware.unwrap_or(0.0);
            let mut t = -before;
            for (name, d) in [
                ("firmware", b.firmware),
                ("loader", b.loader),
                ("kernel", b.kernel),
                ("initrd", b.initrd),
                ("userspace", b.userspace),
            ] {
                if let Some(d) = d {
                    bars.push(Bar {
                        label: format!("{name} {}", human(d)),
                        start: t,
                        dur: d,
                        kind: Kind::Boot,
                        depth: 0,
                        critical: matches!(name, "kernel" | "initrd"),
                        same_row: false,
                    });
                    t += d;
                }
            }
        }
        let mut not_drawn = 0;
        let mut previous_end = f64::MIN;
        for (stage, s) in &status.stages {
            let start = at(s.started_unix);
            let dur = s.duration_ms.unwrap_or(0.0) / 1000.0;
            // One process may run several stages (`run --stage all`): its start-up was before
            // the first of them only.
            let startup = (s.startup_ms.unwrap_or(0.0) / 1000.0).min(start - previous_end);
            previous_end = start + dur;
            let prepare = s.prepare_ms.unwrap_or(0.0) / 1000.0;
            let mut label = format!("stage {stage} {}", human(dur));
            if s.duration_ms.is_none() {
                label = format!("stage {stage} (running)");
            }
            bars.push(Bar {
                label,
                start,
                dur,
                kind: Kind::Stage,
                depth: 0,
                critical: false,
                same_row: false,
            });
            for (kind, b0, d) in [
                (Kind::Startup, start - startup, startup),
                (Kind::Prepare, start, prepare),
            ] {
                if d > 0.0 {
                    bars.push(Bar {
                        label: String::new(),
                        start: b0,
                        dur: d,
                        kind,
                        depth: 0,
                        critical: true,
                        same_row: true,
                    });
                }
            }
            // A module belongs to the stage run it ran in: a local-stage module can run in
            // the network stage's run, when only that one found the instance.
            let ran_in = |m: &crate::state::status::ModuleStatus| {
                m.started_unix
                    .and_then(|t| {
                        status.stages.iter().find(|(_, s)| {
                            t >= s.started_unix && s.finished_unix.is_none_or(|f| t <= f + 0.001)
                        })
                    })
                    .map_or(m.stage, |(st, _)| *st)
            };
            let mut mods: Vec<_> = status
                .modules
                .iter()
                .filter(|(_, m)| ran_in(m) == *stage)
                .collect();
            mods.sort_by(|a, b| {
                let key =
                    |m: &crate::state::status::ModuleStatus| m.started_unix.unwrap_or(f64::MAX);
                key(a.1).total_cmp(&key(b.1)).then(a.0.cmp(b.0))
            });
            let first_module = bars.len();
            for (name, m) in mods {
                let marked = matches!(
                    m.state,
                    ModState::Failed | ModState::Deferred | ModState::Blocked | ModState::Running
                );
                let (mstart, mdur) = match (m.started_unix, m.duration_ms) {
                    (Some(t), d) => (at(t), d.unwrap_or(0.0) / 1000.0),
                    // Deferred or blocked: no run, marked at the end of its stage.
                    (None, _) if marked => (start + dur, 0.0),
                    _ => {
                        not_drawn += 1;
                        continue;
                    }
                };
                let mut label = format!("{name} {}", m.state.as_str());
                if m.stage != *stage {
                    label = format!("{name} ({}) {}", m.stage, m.state.as_str());
                }
                if m.duration_ms.is_some() {
                    label.push_str(&format!(" {}", human(mdur)));
                }
                bars.push(Bar {
                    label,
                    start: mstart,
                    dur: mdur,
                    kind: Kind::Module(m.state),
                    depth: 1,
                    critical: false,
                    same_row: false,
                });
                bars.extend(steps(&m.details, mstart, &at));
            }
            mark_critical(&mut bars[first_module..], start + prepare);
        }
        let title = format!(
            "stoke boot of {} ({}): {}",
            status.instance_id.as_deref().unwrap_or("unknown instance"),
            status.datasource.as_deref().unwrap_or("no datasource"),
            status.overall_line()
        );
        Timeline {
            title,
            origin,
            bars,
            not_drawn,
        }
    }

    /// The picture.
    pub fn svg(&self) -> String {
        const LABEL_W: f64 = 330.0;
        const CHART_W: f64 = 860.0;
        const ROW: f64 = 20.0;
        const TOP: f64 = 64.0;
        let rows = self.bars.iter().filter(|b| !b.same_row).count().max(1);
        let height = TOP + rows as f64 * ROW + 70.0;
        let width = LABEL_W + CHART_W + 30.0;
        let t0 = self.bars.iter().map(|b| b.start).fold(0.0, f64::min);
        let t1 = self
            .bars
            .iter()
            .map(|b| b.start + b.dur)
            .fold(t0 + 0.001, f64::max);
        let step = tick_step(t1 - t0);
        // A hair of slack: a start computed as 0 may come out as -1e-15.
        let (t0, t1) = (
            (t0 / step + 1e-6).floor() * step,
            (t1 / step - 1e-6).ceil() * step,
        );
        let x = |t: f64| LABEL_W + (t - t0) / (t1 - t0) * CHART_W;
        let mut o = String::new();
        let _ = write!(
            o,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="22" font-size="15" font-weight="bold">{}</text>
<text x="10" y="42" fill="#555">time from {}, in seconds</text>
"##,
            esc(&self.title),
            self.origin
        );
        // Ticks and grid.
        let mut t = t0;
        while t <= t1 + step / 2.0 {
            let xt = x(t);
            let _ = writeln!(
                o,
                r##"<line x1="{xt:.1}" y1="{:.0}" x2="{xt:.1}" y2="{:.0}" stroke="#e4e4e4"/><text x="{xt:.1}" y="{:.0}" text-anchor="middle" fill="#555">{}</text>"##,
                TOP - 6.0,
                TOP + rows as f64 * ROW,
                TOP - 10.0,
                tick_label(t, step)
            );
            t += step;
        }
        let mut row = 0usize;
        let mut critical_points: Vec<(f64, f64, f64)> = Vec::new();
        for (i, b) in self.bars.iter().enumerate() {
            if !b.same_row && i > 0 {
                row += 1;
            }
            let y = TOP + row as f64 * ROW;
            if !b.same_row {
                if row % 2 == 1 {
                    let _ = writeln!(
                        o,
                        r##"<rect x="0" y="{y:.1}" width="{width:.0}" height="{ROW}" fill="#f6f7f9"/>"##
                    );
                }
                let indent = 10.0 + f64::from(b.depth) * 16.0;
                let weight = if b.depth == 0 { "bold" } else { "normal" };
                let mark = match b.kind {
                    Kind::Module(ModState::Failed) | Kind::Step { failed: true } => "✗ ",
                    Kind::Module(ModState::Deferred) => "⏸ ",
                    Kind::Module(ModState::Blocked) => "⊘ ",
                    _ => "",
                };
                let _ = writeln!(
                    o,
                    r##"<text x="{indent:.0}" y="{:.1}" font-weight="{weight}" fill="{}">{}{}</text>"##,
                    y + 14.0,
                    text_colour(b.kind),
                    mark,
                    esc(&shorten(&b.label, 46 - usize::from(b.depth) * 2))
                );
            }
            let (h, dy) = match b.kind {
                Kind::Step { .. } => (10.0, 5.0),
                Kind::Startup | Kind::Prepare => (8.0, 6.0),
                _ => (14.0, 3.0),
            };
            let bx = x(b.start);
            let bw = (x(b.start + b.dur) - bx).max(2.0);
            let deferred = matches!(b.kind, Kind::Module(ModState::Deferred | ModState::Blocked))
                && b.dur == 0.0;
            if deferred {
                // No run: a hollow diamond where its stage ended.
                let cy = y + ROW / 2.0;
                let _ = writeln!(
                    o,
                    r##"<path d="M{bx:.1} {:.1} l6 6 l-6 6 l-6 -6 z" fill="#fff" stroke="{}" stroke-width="2"/>"##,
                    cy - 6.0,
                    fill(b.kind)
                );
            } else {
                let stroke = if b.critical && !matches!(b.kind, Kind::Startup | Kind::Prepare) {
                    r##" stroke="#d00000" stroke-width="2""##
                } else {
                    ""
                };
                let _ = writeln!(
                    o,
                    r##"<rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{h}" rx="2" fill="{}"{stroke}><title>{}</title></rect>"##,
                    y + dy,
                    fill(b.kind),
                    esc(&b.label)
                );
            }
            if b.critical {
                critical_points.push((bx, bx + bw, y + ROW / 2.0));
            }
        }
        // The critical path: each critical bar's end joined to the next one's start.
        if critical_points.len() > 1 {
            let mut d = String::new();
            for (i, (a, b, y)) in critical_points.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{a:.1} {y:.1} L{b:.1} {y:.1} ",
                    if i == 0 { "M" } else { "L" }
                );
            }
            let _ = writeln!(
                o,
                r##"<path d="{}" fill="none" stroke="#d00000" stroke-width="1.5" stroke-dasharray="4 2" opacity="0.8"/>"##,
                d.trim_end()
            );
        }
        // Legend.
        let ly = TOP + rows as f64 * ROW + 24.0;
        let mut lx = 10.0;
        for (name, colour) in [
            ("ok", fill(Kind::Module(ModState::Ok))),
            ("failed", fill(Kind::Module(ModState::Failed))),
            ("deferred", fill(Kind::Module(ModState::Deferred))),
            ("blocked", fill(Kind::Module(ModState::Blocked))),
            ("step / script", fill(Kind::Step { failed: false })),
            ("stage", fill(Kind::Stage)),
            ("process start-up", fill(Kind::Startup)),
            ("config + datasource", fill(Kind::Prepare)),
            ("boot (systemd-analyze)", fill(Kind::Boot)),
        ] {
            let _ = writeln!(
                o,
                r##"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{colour}"/><text x="{:.0}" y="{ly:.0}">{name}</text>"##,
                ly - 10.0,
                lx + 16.0
            );
            lx += 24.0 + name.chars().count() as f64 * 7.0;
        }
        let mut note = "red outline and dashed line: the critical path".to_string();
        if self.not_drawn > 0 {
            note.push_str(&format!(
                "; {} module(s) not drawn (skipped or disabled: no time spent)",
                self.not_drawn
            ));
        }
        let _ = writeln!(
            o,
            r##"<text x="10" y="{:.0}" fill="#555">{}</text>"##,
            ly + 22.0,
            esc(&note)
        );
        o.push_str("</svg>\n");
        o
    }

    /// A self-contained page: the picture and the text report under it.
    pub fn html(&self, text: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
             <body style=\"font-family: sans-serif; margin: 1em\">\n{}\n<pre>{}</pre>\n</body></html>\n",
            esc(&self.title),
            self.svg(),
            esc(text)
        )
    }
}

/// Nested bars from a module's details: its scripts (with their own start times), and any
/// list of timed steps (`{"step", "target", "ms"}`, one after another from the module's start).
fn steps(details: &serde_json::Value, module_start: f64, at: &dyn Fn(f64) -> f64) -> Vec<Bar> {
    let mut out = Vec::new();
    if let Some(report) = stoke_api::ScriptsReport::from_details(details) {
        for run in report.scripts {
            let (Some(t), Some(ms)) = (run.started_unix, run.duration_ms) else {
                continue;
            };
            let failed = matches!(run.outcome, ScriptOutcome::Failed | ScriptOutcome::TimedOut);
            out.push(Bar {
                label: format!(
                    "{}/{} {} {}",
                    run.source,
                    run.name,
                    run.outcome.as_str(),
                    human(ms / 1000.0)
                ),
                start: at(t),
                dur: ms / 1000.0,
                kind: Kind::Step { failed },
                depth: 2,
                critical: false,
                same_row: false,
            });
        }
        return out;
    }
    let Some(obj) = details.as_object() else {
        return out;
    };
    for list in obj.values().filter_map(|v| v.as_array()) {
        let mut t = module_start;
        for item in list {
            let ms = item
                .get("ms")
                .or_else(|| item.get("duration_ms"))
                .and_then(serde_json::Value::as_f64);
            let Some(ms) = ms else { continue };
            let name = ["step", "name", "command", "type"]
                .iter()
                .find_map(|k| item.get(*k).and_then(|v| v.as_str()))
                .unwrap_or("step");
            let mut label = name.to_string();
            if let Some(target) = item.get("target").and_then(|v| v.as_str()) {
                label.push_str(&format!(" {target}"));
            }
            let start = item
                .get("started_unix")
                .and_then(serde_json::Value::as_f64)
                .map_or(t, at);
            out.push(Bar {
                label: format!("{label} {}", human(ms / 1000.0)),
                start,
                dur: ms / 1000.0,
                kind: Kind::Step { failed: false },
                depth: 2,
                critical: false,
                same_row: false,
            });
            t = start + ms / 1000.0;
        }
    }
    out
}

/// Marks the modules the stage waited on: from the one that ended last, back through the one
/// that ended last before it started, to the stage's preparation. (Modules run in parallel
/// where their order allows; this is the chain that set the stage's length.)
fn mark_critical(bars: &mut [Bar], prepared: f64) {
    const SLACK: f64 = 0.002;
    let modules: Vec<usize> = (0..bars.len())
        .filter(|&i| matches!(bars[i].kind, Kind::Module(_)) && bars[i].dur > 0.0)
        .collect();
    let end = |b: &Bar| b.start + b.dur;
    let mut limit = f64::MAX;
    loop {
        let next = modules
            .iter()
            .copied()
            .filter(|&i| end(&bars[i]) <= limit + SLACK && !bars[i].critical)
            .max_by(|&a, &b| end(&bars[a]).total_cmp(&end(&bars[b])));
        let Some(i) = next else { break };
        if end(&bars[i]) < prepared - SLACK {
            break;
        }
        bars[i].critical = true;
        limit = bars[i].start;
    }
}

fn fill(kind: Kind) -> &'static str {
    match kind {
        Kind::Boot => "#9fa8da",
        Kind::Startup => "#bdbdbd",
        Kind::Prepare => "#4fc3f7",
        Kind::Stage => "#546e7a",
        Kind::Module(ModState::Ok) => "#43a047",
        Kind::Module(ModState::Failed) => "#e53935",
        Kind::Module(ModState::Deferred) => "#fb8c00",
        Kind::Module(ModState::Blocked) => "#8e24aa",
        Kind::Module(ModState::Running | ModState::Pending) => "#1e88e5",
        Kind::Module(ModState::Skipped | ModState::Disabled) => "#9e9e9e",
        Kind::Step { failed: true } => "#ef9a9a",
        Kind::Step { failed: false } => "#80cbc4",
    }
}

fn text_colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Module(ModState::Failed) | Kind::Step { failed: true } => "#c62828",
        Kind::Module(ModState::Deferred) => "#e65100",
        Kind::Module(ModState::Blocked) => "#6a1b9a",
        _ => "#222",
    }
}

/// A round step giving 5 to 12 ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    for exp in -3..8 {
        let decade = 10f64.powi(exp);
        for m in [1.0, 2.0, 5.0] {
            if span / (decade * m) <= 12.0 {
                return decade * m;
            }
        }
    }
    1e8
}

fn tick_label(t: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{t:.decimals$}")
}

/// `812 ms`, `2.35 s`.
fn human(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1000.0)
    } else {
        format!("{secs:.2} s")
    }
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::status::{ModuleStatus, StageStatus};
    use stoke_api::{Frequency, Stage};

    fn module(stage: Stage, state: ModState, start: Option<f64>, ms: f64) -> ModuleStatus {
        ModuleStatus {
            stage,
            frequency: Frequency::PerBoot,
            state,
            reason: String::new(),
            summary: String::new(),
            error: None,
            warnings: vec![],
            started_unix: start,
            duration_ms: start.map(|_| ms),
            details: serde_json::Value::Null,
            background: None,
            before_metadata: false,
        }
    }

    fn boot() -> Status {
        let mut s = Status::default();
        s.done = true;
        s.instance_id = Some("i-0abc".parse().unwrap());
        s.kernel_started_unix = Some(1000.0);
        s.stages.insert(
            Stage::Local,
            StageStatus {
                started_unix: 1005.0,
                finished_unix: Some(1005.5),
                duration_ms: Some(500.0),
                startup_ms: Some(30.0),
                main_ms: None,
                prepare_ms: Some(20.0),
                prepare_steps: Vec::new(),
                reruns: vec![],
            },
        );
        // Two parallel chains: hostname (short), disks then mounts (long).
        s.modules.insert(
            "hostname".into(),
            module(Stage::Local, ModState::Ok, Some(1005.02), 10.0),
        );
        let mut disks = module(Stage::Local, ModState::Ok, Some(1005.02), 300.0);
        disks.details = serde_json::json!({"steps": [
            {"step": "mdadm --create", "target": "/dev/md0", "ms": 100},
            {"step": "mkfs.xfs", "target": "/dev/md0", "ms": 150}
        ]});
        s.modules.insert("disks".into(), disks);
        s.modules.insert(
            "mounts".into(),
            module(Stage::Local, ModState::Failed, Some(1005.32), 100.0),
        );
        s.modules.insert(
            "puppet".into(),
            module(Stage::Local, ModState::Deferred, None, 0.0),
        );
        s.modules.insert(
            "ntp".into(),
            module(Stage::Local, ModState::Skipped, None, 0.0),
        );
        s
    }

    fn bar<'a>(t: &'a Timeline, prefix: &str) -> &'a Bar {
        t.bars
            .iter()
            .find(|b| b.label.starts_with(prefix))
            .unwrap_or_else(|| panic!("no bar {prefix}: {:?}", t.bars))
    }

    #[test]
    fn systemd_analyze_line_is_read() {
        let s = parse_systemd_analyze(
            "Startup finished in 2.101s (firmware) + 1.2s (loader) + 812ms (kernel) + \
             1min 1.5s (initrd) + 9.8s (userspace) = 1min 15.4s\n\
             graphical.target reached after 9.7s in userspace.\n",
        )
        .expect("parsed");
        assert_eq!(s.firmware, Some(2.101));
        assert_eq!(s.kernel, Some(0.812));
        assert_eq!(s.initrd, Some(61.5));
        assert_eq!(s.userspace, Some(9.8));
        assert_eq!(parse_systemd_analyze("Bootup is not yet finished."), None);
    }

    #[test]
    fn bars_sit_where_the_status_says_from_kernel_start() {
        let spans = BootSpans {
            kernel: Some(1.0),
            initrd: Some(2.0),
            userspace: Some(4.0),
            ..BootSpans::default()
        };
        let t = Timeline::of(&boot(), Some(&spans));
        assert_eq!(t.origin, "kernel start");
        let initrd = bar(&t, "initrd");
        assert_eq!((initrd.start, initrd.dur), (1.0, 2.0));
        let stage = bar(&t, "stage local");
        assert!((stage.start - 5.0).abs() < 1e-9 && (stage.dur - 0.5).abs() < 1e-9);
        let mkfs = bar(&t, "mkfs.xfs /dev/md0");
        // After mdadm's 100 ms, from the module's start.
        assert!((mkfs.start - 5.12).abs() < 1e-9, "{mkfs:?}");
        assert_eq!((mkfs.depth, mkfs.kind), (2, Kind::Step { failed: false }));
        assert_eq!(t.not_drawn, 1, "the skipped module has no bar");
        let puppet = bar(&t, "puppet deferred");
        assert_eq!(puppet.start, 5.5, "deferred: marked at its stage's end");
    }

    #[test]
    fn one_process_for_several_stages_starts_up_once() {
        let mut s = boot();
        // `run --stage all`: the network stage's start-up is the process's age, 1 s.
        s.stages.insert(
            Stage::Network,
            StageStatus {
                started_unix: 1006.0,
                finished_unix: Some(1006.1),
                duration_ms: Some(100.0),
                startup_ms: Some(1030.0),
                main_ms: None,
                prepare_ms: Some(1.0),
                prepare_steps: Vec::new(),
                reruns: vec![],
            },
        );
        let t = Timeline::of(&s, None);
        let startups: Vec<(f64, f64)> = t
            .bars
            .iter()
            .filter(|b| b.kind == Kind::Startup)
            .map(|b| (b.start, b.dur))
            .collect();
        assert_eq!(startups.len(), 2);
        let (start, dur) = startups[1];
        assert!(
            (start - 5.5).abs() < 1e-9 && (dur - 0.5).abs() < 1e-9,
            "{startups:?}"
        );
    }

    #[test]
    fn the_critical_path_is_the_chain_that_ended_last() {
        let t = Timeline::of(&boot(), None);
        let critical: Vec<&str> = t
            .bars
            .iter()
            .filter(|b| b.critical && matches!(b.kind, Kind::Module(_)))
            .map(|b| b.label.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(critical, vec!["disks", "mounts"]);
        assert!(!bar(&t, "hostname").critical);
    }

    #[test]
    fn the_svg_is_well_formed_and_marks_failures() {
        let mut s = boot();
        s.modules.insert(
            "<odd&>".into(),
            module(Stage::Local, ModState::Ok, Some(1005.1), 1.0),
        );
        s.datasource = Some("ds-<x>&".into());
        let svg = Timeline::of(&s, None).svg();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        assert!(texts.iter().any(|t| t.contains("ds-<x>&")), "{texts:?}");
        assert!(
            texts.iter().any(|t| t.starts_with("<odd&> ok")),
            "{texts:?}"
        );
        assert!(texts.contains(&"✗ mounts failed 100.0 ms"), "{texts:?}");
        assert!(texts.contains(&"⏸ puppet deferred"), "{texts:?}");
        let red_outlined = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("stroke") == Some("#d00000"))
            .count();
        assert_eq!(red_outlined, 2, "disks and mounts");
        let html = Timeline::of(&s, None).html("report <text>");
        assert!(html.contains("<svg") && html.contains("report &lt;text&gt;"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(0.9), 0.1);
        assert_eq!(tick_step(30.0), 5.0);
        assert_eq!(tick_step(0.004), 0.001);
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(10.0, 5.0), "10");
    }
}
