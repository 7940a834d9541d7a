//! The results: one row per figure (value, target, pass or short, the command that produced it),
//! printed as a table and written as Markdown and JSON, and the edge's latency-percentile plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use crate::tools::LoadResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Short,
    /// Context only: no target.
    Info,
}

impl Verdict {
    pub fn of(pass: bool) -> Self {
        if pass { Verdict::Pass } else { Verdict::Short }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Short => "SHORT",
            Verdict::Info => "-",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: u8,
    pub name: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
    pub command: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: String,
    pub started: String,
    pub machine: Vec<(String, String)>,
    pub tools: Vec<(String, String)>,
    pub rows: Vec<Row>,
    /// The raw runs behind the rows, by name.
    pub runs: serde_json::Map<String, serde_json::Value>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(
        &mut self,
        figure: u8,
        name: &str,
        value: String,
        target: &str,
        verdict: Verdict,
        command: &str,
    ) {
        let row = Row {
            figure,
            name: name.to_owned(),
            value,
            target: target.to_owned(),
            verdict,
            command: command.to_owned(),
        };
        println!(
            "[bench] {:>2} {:<48} {:>22}  {:<14} {}",
            row.figure,
            row.name,
            row.value,
            row.target,
            row.verdict.as_str()
        );
        self.rows.push(row);
    }

    pub fn run<T: Serialize>(&mut self, name: &str, value: &T) {
        if let Ok(v) = serde_json::to_value(value) {
            self.runs.insert(name.to_owned(), v);
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| # | figure | value | target | result | command |\n|---|---|---|---|---|---|"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | `{}` |",
                r.figure,
                r.name,
                r.value,
                r.target,
                r.verdict.as_str(),
                r.command.replace('|', "\\|")
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Benchmark results ({} mode)\n\nRun `{}` started {}. Every ratio compares two runs made a \
             moment apart in this one run, on this machine; absolute numbers are context only.\n\n",
            self.mode,
            if self.mode == "quick" {
                "scripts/bench.sh --quick"
            } else {
                "scripts/bench.sh"
            },
            self.started
        );
        out.push_str("## Machine\n\n");
        for (k, v) in &self.machine {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push_str("\n## Tools\n\n");
        for (k, v) in &self.tools {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push_str("\n## Figures\n\n");
        out.push_str(&self.table());
        if !self.notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out.push_str(
            "\n## Latency percentiles through the edge\n\n![latency percentiles](latency.svg)\n",
        );
        out
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("latest.md"), self.markdown())?;
        std::fs::write(
            dir.join("latest.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        Ok(())
    }
}

/// Percentile → latency lines, one per run, on a "nines" axis (50%, 90%, 99%, 99.9%, 99.99%).
pub fn plot(path: &Path, title: &str, series: &[(&str, &LoadResult)]) -> anyhow::Result<()> {
    let nines = |p: f64| -(1.0 - p / 100.0).log10();
    let points = |r: &LoadResult| -> Vec<(f64, f64)> {
        let l = &r.latency;
        let mut v = vec![(50.0, l.p50), (75.0, l.p75), (90.0, l.p90)];
        v.extend(l.p95.map(|x| (95.0, x)));
        v.push((99.0, l.p99));
        v.extend(l.p999.map(|x| (99.9, x)));
        v.extend(l.p9999.map(|x| (99.99, x)));
        v.into_iter()
            .filter(|(_, ms)| *ms > 0.0)
            .map(|(p, ms)| (nines(p), ms))
            .collect()
    };
    let max_ms = series
        .iter()
        .flat_map(|(_, r)| points(r))
        .map(|(_, ms)| ms)
        .fold(0.1_f64, f64::max);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).context("plot background")?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(nines(50.0)..nines(99.99), (0.01..max_ms * 1.5).log_scale())
        .context("plot axes")?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.4}%", 100.0 * (1.0 - 10f64.powf(-x))))
        .draw()
        .context("plot mesh")?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (i, (name, r)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points(r), color))
            .context("plot line")?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points(r)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .context("plot points")?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .context("plot legend")?;
    root.present().context("writing the plot")?;
    Ok(())
}
