//! In-memory engine throughput: the call core (`rtcd::sim`, real str0m peers, no sockets) run
//! as one shard on one thread, then as two shards on two threads with half the calls each
//! (each with its own `Metrics`; the engine's shards share one, but on the per-packet path a
//! shard touches only its own write-time handles). Prints forwarded packets (packet writes
//! to viewers' tracks, `rtcd_rtc_rtp_tracks_writes_time_count`) per second of wall clock for
//! both and their ratio, and each thread's CPU time from /proc. The clients' own
//! str0m work runs on the same threads, so the absolute figures are a lower bound of the core's;
//! the ratio is what shows whether shards share anything on the per-packet path.
//!
//! Run with `cargo bench -p rtcd --bench engine_throughput -- [--calls N] [--per-call M]
//! [--seconds S]` (`make bench` runs it with the defaults: 4 calls of 5 talkers, 10 s simulated).

use std::time::{Duration, Instant};

use rtcd::{
    call::Faults,
    sim::{Behaviour, Sim},
};

struct Run {
    forwarded: u64,
    cpu: Duration,
    /// Time inside the server core's calls only.
    server: Duration,
}

/// One shard's worth of calls, run for `seconds` of simulated time after everyone joined.
fn shard(calls: usize, per_call: usize, seconds: u64, tag: &str) -> Result<Run, String> {
    let mut sim = Sim::new(Faults::default());
    for c in 0..calls {
        for u in 0..per_call {
            sim.join(
                &format!("{tag}-call{c}"),
                &format!("{tag}-c{c}-u{u}"),
                Behaviour::default(),
            )?;
            sim.run_for(Duration::from_millis(20))?;
        }
    }
    sim.run_for(Duration::from_secs(2))?;
    let before = sim.metrics.rtp_track_writes.total();
    let cpu0 = thread_cpu();
    let server0 = sim.server_time;
    sim.run_for(Duration::from_secs(seconds))?;
    let cpu = thread_cpu().saturating_sub(cpu0);
    let server = sim.server_time.saturating_sub(server0);
    let after = sim.metrics.rtp_track_writes.total();
    Ok(Run {
        forwarded: after - before,
        cpu,
        server,
    })
}

/// This thread's user + system CPU time (/proc/thread-self/stat, in USER_HZ = 100 ticks/s).
fn thread_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let calls = usize::try_from(arg(&args, "--calls", 4))
        .map_err(|e| e.to_string())?
        .max(2);
    let per_call = usize::try_from(arg(&args, "--per-call", 5))
        .map_err(|e| e.to_string())?
        .max(2);
    let seconds = arg(&args, "--seconds", 10).max(1);
    let half = calls / 2;
    println!("engine_throughput: {calls} calls x {per_call} talkers, {seconds} s simulated after the joins");

    // Warm-up, so neither side pays for first-touch allocations.
    let _ = shard(1, 2, 1, "warm")?;

    let t0 = Instant::now();
    let one = shard(half * 2, per_call, seconds, "one")?;
    let wall_one = t0.elapsed();

    let t0 = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|i| std::thread::spawn(move || shard(half, per_call, seconds, &format!("two{i}"))))
        .collect();
    let mut two = Vec::new();
    for h in handles {
        two.push(h.join().map_err(|_| "a shard thread panicked".to_string())??);
    }
    let wall_two = t0.elapsed();
    let fwd_two: u64 = two.iter().map(|r| r.forwarded).sum();

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let r1 = rate(one.forwarded, wall_one);
    let r2 = rate(fwd_two, wall_two);
    println!(
        "1 shard : {:>9} packets forwarded in {:>6.2} s wall, {:>6.2} s thread CPU: {:>9.0} pkt/s",
        one.forwarded,
        wall_one.as_secs_f64(),
        one.cpu.as_secs_f64(),
        r1
    );
    for (i, r) in two.iter().enumerate() {
        println!(
            "2 shards: shard {i} {:>9} packets, {:>6.2} s thread CPU",
            r.forwarded,
            r.cpu.as_secs_f64()
        );
    }
    println!(
        "2 shards: {:>9} packets forwarded in {:>6.2} s wall: {:>9.0} pkt/s",
        fwd_two,
        wall_two.as_secs_f64(),
        r2
    );
    println!("ratio 2/1: {:.2}x (target >= 1.8x)", r2 / r1.max(1e-9));
    println!(
        "server core alone, 1 shard: {:.2} µs per forwarded packet (time inside Sfu::handle_*)",
        one.server.as_secs_f64() * 1e6 / one.forwarded.max(1) as f64
    );
    Ok(())
}
