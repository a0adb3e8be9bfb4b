//! The machine a benchmark runs on and the processes it measures: tools on the PATH, CPU time
//! and memory (PSS) by PID, pinning to a core, and what CPU this is. Shared by every benchmark in `bench/`.

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// A program on the PATH, or in the sbin directories a non-root PATH may lack.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Clock ticks per second, the unit of [`cpu_ticks`] (usually 100).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of one process in clock ticks (all its threads, live and exited).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // After "pid (comm) ": state is field 0, utime 11, stime 12 (proc(5) fields 14 and 15).
    field(11) + field(12)
}

/// Pins every thread of `pids` to `cpu` (`None`: leaves them where they are).
pub fn pin(pids: &[u32], cpu: Option<usize>) {
    let Some(cpu) = cpu else {
        return;
    };
    let mut set = CpuSet::new();
    if set.set(cpu).is_err() {
        return;
    }
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            {
                let _ = sched_setaffinity(Pid::from_raw(tid), &set);
            }
        }
    }
}

/// The CPU model from /proc/cpuinfo.
pub fn cpu_model() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string())
}

/// A whole number from the environment variable `key` (`default` when unset); anything else
/// stops the bench with a message naming it and the variable.
pub fn env_number(bench: &str, key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{bench} bench: {key}={v:?} is not a whole number");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

/// Proportional set size of one process in bytes (`/proc/PID/smaps_rollup`); 0 if it is gone.
pub fn pss_bytes(pid: u32) -> u64 {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
