//! Results: rows of figures per workload and server, the checks against the targets, a table
//! on stdout and a JSON file.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

/// One line of figures: a workload run against one server configuration.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: String,
    /// `signalbox`, `coturn` or `limit`.
    pub server: String,
    pub workers: usize,
    /// Payload bytes per packet, where the workload has packets.
    pub size: Option<usize>,
    /// Named figures in display order; units are in the names.
    pub figures: Vec<(String, f64)>,
}

impl Row {
    pub fn new(workload: &str, server: &str, workers: usize, size: Option<usize>) -> Row {
        Row {
            workload: workload.into(),
            server: server.into(),
            workers,
            size,
            figures: Vec::new(),
        }
    }

    pub fn set(&mut self, name: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.figures.push((name.into(), v));
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// A figure compared with its target.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub value: f64,
    /// How the value is read, e.g. "signalbox/coturn" or "KB per allocation".
    pub unit: String,
    pub target: String,
    pub met: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn find(
        &self,
        workload: &str,
        server: &str,
        workers: usize,
        size: Option<usize>,
    ) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.workload == workload && r.server == server && r.workers == workers && r.size == size
        })
    }

    /// Adds a check `value ≤ max` (or `≥ min` when `at_least`).
    pub fn check(
        &mut self,
        name: &str,
        value: Option<f64>,
        unit: &str,
        bound: f64,
        at_least: bool,
    ) {
        let Some(value) = value else {
            return;
        };
        let met = if at_least {
            value >= bound
        } else {
            value <= bound
        };
        self.checks.push(Check {
            name: name.into(),
            value,
            unit: unit.into(),
            target: format!("{} {bound}", if at_least { "≥" } else { "≤" }),
            met,
        });
    }

    /// Adds a figure shown with the checks that has no target (a share, for context).
    pub fn info(&mut self, name: &str, value: Option<f64>, unit: &str) {
        let Some(value) = value else {
            return;
        };
        self.checks.push(Check {
            name: name.into(),
            value,
            unit: unit.into(),
            target: "-".into(),
            met: true,
        });
    }

    /// The table printed on stdout: one block per workload, then the checks.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut workloads: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !workloads.contains(&r.workload.as_str()) {
                workloads.push(&r.workload);
            }
        }
        for w in workloads {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.workload == w).collect();
            let mut cols: Vec<&str> = Vec::new();
            for r in &rows {
                for (n, _) in &r.figures {
                    if !cols.contains(&n.as_str()) {
                        cols.push(n);
                    }
                }
            }
            let _ = writeln!(out, "\n== {w}");
            let mut header = format!("{:<16}{:>6}", "server", "bytes");
            for c in &cols {
                let _ = write!(header, "{:>w$}", c, w = c.len().max(10) + 2);
            }
            let _ = writeln!(out, "{header}");
            for r in rows {
                let size = r.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                let mut line = format!("{:<16}{:>6}", format!("{} w{}", r.server, r.workers), size);
                for c in &cols {
                    let v = r.get(c).map(fmt_num).unwrap_or_else(|| "-".into());
                    let _ = write!(line, "{:>w$}", v, w = c.len().max(10) + 2);
                }
                let _ = writeln!(out, "{line}");
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "\n== targets");
            for c in &self.checks {
                let _ = writeln!(
                    out,
                    "{:<4} {:<58} {:>10} {:<28} target {}",
                    match (c.met, c.target.as_str()) {
                        (_, "-") => "",
                        (true, _) => "ok",
                        (false, _) => "MISS",
                    },
                    c.name,
                    fmt_num(c.value),
                    c.unit,
                    c.target
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    pub fn to_json(&self, machine: Value) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut figures = Map::new();
                for (n, v) in &r.figures {
                    figures.insert(n.clone(), json!(v));
                }
                json!({
                    "workload": r.workload,
                    "server": r.server,
                    "workers": r.workers,
                    "size": r.size,
                    "figures": figures,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| json!({"name": c.name, "value": c.value, "unit": c.unit, "target": c.target, "met": c.met}))
            .collect();
        json!({ "machine": machine, "rows": rows, "checks": checks, "notes": self.notes })
    }

    pub fn write_json(&self, path: &Path, machine: Value) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.to_json(machine))?)?;
        Ok(())
    }
}

/// Numbers as a person reads them: integers without decimals, small values with three
/// significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || (a >= 100.0 && v.fract().abs() < 1e-9) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

/// What the figures were measured on.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    json!({
        "cpu": model,
        "cores": cores,
        "kernel": kernel.trim(),
        "memory_mb": mem_kb / 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_compare_in_the_stated_direction() {
        let mut r = Report::default();
        r.check("cpu ratio", Some(0.65), "x", 0.7, false);
        r.check("rate ratio", Some(1.2), "x", 1.3, true);
        r.check("missing", None, "x", 1.0, false);
        assert_eq!(r.checks.len(), 2);
        assert!(r.checks[0].met);
        assert!(!r.checks[1].met);
        assert!(r.table().contains("MISS"));
    }

    #[test]
    fn the_json_report_holds_rows_and_checks() {
        let mut r = Report::default();
        let mut row = Row::new("turn", "coturn", 2, Some(100));
        row.set("cpu_ns_per_pkt", Some(7000.0));
        row.set("absent", None);
        r.rows.push(row);
        let v = r.to_json(json!({"cores": 2}));
        assert_eq!(v["rows"][0]["figures"]["cpu_ns_per_pkt"], json!(7000.0));
        assert!(v["rows"][0]["figures"].get("absent").is_none());
        assert!(r.table().contains("coturn w2"));
    }

    #[test]
    fn numbers_are_printed_with_sensible_precision() {
        assert_eq!(fmt_num(84123.4), "84123");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.0123), "0.012");
        assert_eq!(fmt_num(0.0), "0");
    }
}
