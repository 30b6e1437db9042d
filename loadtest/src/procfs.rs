//! CPU time and memory of a process, read from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use anyhow::{Context, Result, bail};

/// Kernel clock ticks per second for `utime`/`stime` (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_S: f64 = 100.0;

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU seconds of all threads, living and exited.
    pub cpu_s: f64,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads `pid` (or `self`).
pub fn sample(pid: Option<u32>) -> Result<Sample> {
    let base = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let stat =
        std::fs::read_to_string(format!("{base}/stat")).with_context(|| format!("reading {base}/stat"))?;
    let status = std::fs::read_to_string(format!("{base}/status"))
        .with_context(|| format!("reading {base}/status"))?;
    parse(&stat, &status).with_context(|| format!("parsing {base}/stat"))
}

fn parse(stat: &str, status: &str) -> Result<Sample> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some(close) = stat.rfind(')') else {
        bail!("no ')' in stat")
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime 15.
    let num = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .context("stat is too short")?
            .parse::<f64>()
            .with_context(|| format!("stat field {i}"))
    };
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        cpu_s: (num(14)? + num(15)?) / TICKS_PER_S,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        threads: kib("Threads:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 200";
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t3\n";
        let s = parse(stat, status).unwrap();
        assert_eq!(
            s,
            Sample {
                cpu_s: 3.0,
                rss_kib: 1024,
                hwm_kib: 2048,
                threads: 3
            }
        );
        assert!(parse("no paren", status).is_err());
        assert!(parse("1 (x) S 1", status).is_err());
    }

    #[test]
    fn reads_itself() {
        let s = sample(None).unwrap();
        assert!(s.rss_kib > 0 && s.threads >= 1);
    }
}
