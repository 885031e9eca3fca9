//! Peak memory of a load, measured in a fresh child process so that memory
//! kept by the allocator from earlier runs does not hide the peak.

use std::process::Command;

/// The process's peak resident set size so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

/// The process's current resident set size, in bytes (Linux `VmRSS`).
pub fn current_rss_bytes() -> Option<u64> {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    let kib: u64 = line.trim_start_matches(name).trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Runs this binary again as `--memory-probe <variant>` and returns the
/// peak growth it printed, in bytes.
pub fn probe_in_child(variant: &str, n: usize, database_url: &str) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let output = Command::new(exe)
        .args(["--memory-probe", variant, "--n", &n.to_string()])
        .env("BENCH_DATABASE_URL", database_url)
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("memory probe {variant} failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}
