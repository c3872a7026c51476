//! `parkhub history`: one point's history, as a table or CSV (`ts,value`).

use std::io::Write;
use std::process::ExitCode;

use crate::cli::HistoryArgs;
use crate::config;
use crate::store::{History, DB_FILE};
use crate::timeparse::{format_local, parse_time};

pub fn run(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(d) => return Ok(super::report_config_errors(&d)),
    };
    let tz = loaded.config.hub.timezone.0;
    let now = chrono::Utc::now().timestamp();
    let parse = |s: &Option<String>, default: i64| -> anyhow::Result<i64> {
        match s {
            None => Ok(default),
            Some(s) => parse_time(s, tz).map_err(anyhow::Error::msg),
        }
    };
    let from = parse(&args.from, now - 86_400)?;
    let to = parse(&args.to, now)?;
    if from > to {
        anyhow::bail!("--from is after --to");
    }
    if let Some(step) = args.step {
        if step < 1 {
            anyhow::bail!("--step must be at least 1 second");
        }
    }
    let history = History::open(&loaded.config.hub.data_dir.join(DB_FILE), tz)?;
    let Some(series) = history.series(&args.device, &args.point)? else {
        let known = loaded.config.device(&args.device).is_some();
        if known {
            eprintln!(
                "no history for {}.{} (unknown point, or nothing recorded yet)",
                args.device, args.point
            );
        } else {
            eprintln!("no device `{}` in {}", args.device, args.config.display());
        }
        return Ok(ExitCode::FAILURE);
    };
    let rows = if args.consumption {
        history.consumption(&series, from, to, args.step.unwrap_or(3600))?
    } else {
        history.values(&series, from, to, args.step)?
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // A text point (a state, a fault label) has its changes instead of numbers.
    let states = if rows.is_empty() && !args.consumption {
        history.states(&series, from, to)?
    } else {
        Vec::new()
    };
    if !states.is_empty() {
        if !args.csv {
            writeln!(
                out,
                "{}.{} (state changes) {} rows",
                series.device,
                series.point,
                states.len()
            )?;
        } else {
            writeln!(out, "ts,value")?;
        }
        let sep = if args.csv { "," } else { "  " };
        for (ts, v) in &states {
            writeln!(out, "{}{sep}{v}", format_local(*ts, tz))?;
        }
    } else if args.csv {
        writeln!(out, "ts,value")?;
        for (ts, v) in &rows {
            writeln!(
                out,
                "{},{}",
                format_local(*ts, tz),
                crate::reading::round_for_display(*v)
            )?;
        }
    } else {
        let unit = series.unit.as_deref().unwrap_or("");
        let what = if args.consumption {
            "consumption"
        } else {
            "value"
        };
        writeln!(
            out,
            "{}.{} ({what}, {unit}) {} rows",
            series.device,
            series.point,
            rows.len()
        )?;
        for (ts, v) in &rows {
            writeln!(
                out,
                "{}  {}",
                format_local(*ts, tz),
                crate::reading::round_for_display(*v)
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
