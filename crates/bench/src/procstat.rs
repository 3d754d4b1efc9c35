//! CPU time and memory of a process, read from `/proc`.
//!
//! Throughput on a shared two-core machine swings with whatever else runs; the CPU time a
//! server spends per packet does not, so that is the figure the benchmark leans on. The
//! process-wide `utime`/`stime` in `/proc/PID/stat` already include every thread (live ones and
//! those that exited), so one read covers a multi-threaded server.

use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StatError {
    #[error("cannot read /proc/{pid}/stat: {reason}")]
    Read { pid: u32, reason: String },
    #[error("malformed /proc stat line: {0}")]
    Malformed(&'static str),
}

/// CPU time of a process in clock ticks, as `/proc/PID/stat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    pub utime: u64,
    pub stime: u64,
}

impl CpuTicks {
    pub fn total(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses the `utime` and `stime` fields (14 and 15) of a `/proc/PID/stat` line.
///
/// The second field is the command name in parentheses and may itself contain spaces and
/// parentheses (`(my (odd) name)`), so fields are counted from the *last* `)`.
pub fn parse_stat(line: &str) -> Result<CpuTicks, StatError> {
    let close = line
        .rfind(')')
        .ok_or(StatError::Malformed("no `)` after the command name"))?;
    // After the name: field 3 (state) is the first; utime is field 14, stime field 15.
    let mut rest = line[close + 1..].split_ascii_whitespace();
    let mut field = |n: usize| -> Result<u64, StatError> {
        rest.nth(n)
            .ok_or(StatError::Malformed("too few fields"))?
            .parse::<u64>()
            .map_err(|_| StatError::Malformed("utime/stime is not a number"))
    };
    let utime = field(11)?;
    let stime = field(0)?;
    Ok(CpuTicks { utime, stime })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn read_ticks(pid: u32) -> Result<CpuTicks, StatError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| StatError::Read {
            pid,
            reason: e.to_string(),
        })?;
    parse_stat(&text)
}

/// Resident set size in bytes (`VmRSS` of `/proc/PID/status`).
pub fn read_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&text)
}

/// Extracts `VmRSS` (reported in kB) from `/proc/PID/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A CPU-time measurement window over one process.
#[derive(Clone, Copy, Debug)]
pub struct CpuWindow {
    pid: u32,
    start: CpuTicks,
    started: Instant,
}

/// What a [`CpuWindow`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuUsage {
    /// CPU time consumed (user + system).
    pub cpu: Duration,
    /// Of which in the kernel.
    pub system: Duration,
    /// Wall-clock length of the window.
    pub wall: Duration,
}

impl CpuUsage {
    /// CPU time divided by `count` events, in nanoseconds (None when nothing happened).
    pub fn per_event_ns(&self, count: u64) -> Option<f64> {
        (count > 0).then(|| self.cpu.as_nanos() as f64 / count as f64)
    }

    /// Average number of cores kept busy.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Converts a tick delta into usage; `hz` is the clock-tick rate.
pub fn usage_between(a: CpuTicks, b: CpuTicks, hz: u64, wall: Duration) -> CpuUsage {
    let ticks = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz.max(1));
    CpuUsage {
        cpu: ticks(b.total().saturating_sub(a.total())),
        system: ticks(b.stime.saturating_sub(a.stime)),
        wall,
    }
}

impl CpuWindow {
    pub fn start(pid: u32) -> Result<CpuWindow, StatError> {
        Ok(CpuWindow {
            pid,
            start: read_ticks(pid)?,
            started: Instant::now(),
        })
    }

    pub fn finish(&self) -> Result<CpuUsage, StatError> {
        let end = read_ticks(self.pid)?;
        Ok(usage_between(
            self.start,
            end,
            ticks_per_second(),
            self.started.elapsed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "4242 (turnserver) S 1 4242 4242 0 -1 4194560 1032 0 0 0 1234 567 0 0 20 0 3 0 100 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn utime_and_stime_are_fields_fourteen_and_fifteen() {
        assert_eq!(
            parse_stat(PLAIN),
            Ok(CpuTicks {
                utime: 1234,
                stime: 567
            })
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let odd = PLAIN.replace("(turnserver)", "(my (odd) ) name)");
        assert_eq!(
            parse_stat(&odd),
            Ok(CpuTicks {
                utime: 1234,
                stime: 567
            })
        );
    }

    #[test]
    fn a_truncated_line_is_an_error_not_a_panic() {
        assert!(parse_stat("12 (x) S 1 2 3").is_err());
        assert!(parse_stat("no parenthesis at all").is_err());
        assert!(parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5").is_err());
    }

    #[test]
    fn the_delta_is_converted_with_the_clock_tick_rate() {
        let a = CpuTicks {
            utime: 100,
            stime: 50,
        };
        let b = CpuTicks {
            utime: 150,
            stime: 125,
        };
        let u = usage_between(a, b, 100, Duration::from_secs(2));
        assert_eq!(u.cpu, Duration::from_millis(1250));
        assert_eq!(u.system, Duration::from_millis(750));
        assert!((u.cores() - 0.625).abs() < 1e-9);
        assert_eq!(u.per_event_ns(125_000), Some(10_000.0));
        assert_eq!(u.per_event_ns(0), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_process_can_be_read() {
        let pid = std::process::id();
        assert!(read_ticks(pid).is_ok());
        assert!(read_rss(pid).unwrap_or(0) > 0);
    }
}
