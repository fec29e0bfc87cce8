//! The folder-sharing benchmark behind `scripts/bench-webdav` (ignored in
//! the test suite): the guest GETs a file (default 64 MiB) over the webdav
//! port, timed in the guest, in one run per row:
//!
//! 1. spicetap's own share: `spicetap proxy --share-dir`, recording, with
//!    remote-viewer connected through it;
//! 2. spicy's phodav share (`--spice-shared-dir`) straight to QEMU;
//! 3. spicy's phodav share through spicetap, recording.
//!
//! Prints MB/s (10^6 bytes of file per second) and the spicetap process's
//! user + system CPU seconds per GB of file, as a Markdown table.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name's closing parenthesis; utime and stime
    // are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs `runs` timed GETs of /big.bin; returns (MB/s, CPU s/GB) per run.
fn gets(qemu: &Qemu, row: &str, runs: usize, size: u64, tap: Option<&Spicetap>) -> Vec<(f64, Option<f64>)> {
    let hz = ticks_per_second();
    (0..runs)
        .map(|i| {
            let t0 = tap.map(|t| cpu_ticks(t.guard.pid()));
            let (bytes, secs, status) = webdav_bench(qemu, &format!("{row}{i}"), "/big.bin", Duration::from_secs(300));
            assert_eq!(status, 200, "{row}: GET status");
            assert!(bytes >= size, "{row}: {bytes} bytes");
            let cpu = tap.zip(t0).map(|(t, t0)| (cpu_ticks(t.guard.pid()) - t0) as f64 / hz / (size as f64 / 1e9));
            (size as f64 / 1e6 / secs, cpu)
        })
        .collect()
}

fn spicy_sharing(x: &Xvfb, port: u16, shared: &Path, dir: &Path) -> Guard {
    spicy(x, port, &[format!("--spice-shared-dir={}", shared.display())], dir)
}

#[test]
#[ignore = "benchmark: scripts/bench-webdav"]
fn webdav_get_throughput() {
    let mib: u64 = std::env::var("SPICETAP_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = std::env::var("SPICETAP_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let size = mib * 1024 * 1024;
    let dir = Scratch::new("bench-webdav");
    let shared = dir.path.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(shared.join("big.bin"), big).unwrap();
    let x = Xvfb::start();
    let mut rows = Vec::new();

    // 1. spicetap's share, remote-viewer through spicetap.
    {
        let qemu = Qemu::linux(&dir.path, "", "");
        let share = shared.display().to_string();
        let mut tap = Spicetap::start(
            &dir.path,
            &format!("127.0.0.1:{}", qemu.port),
            true,
            &["--share-dir", &share, "--no-video"],
        );
        let mut viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
        std::thread::sleep(Duration::from_secs(3));
        rows.push((
            "spicetap `--share-dir` (dav-server), recording",
            "remote-viewer through spicetap",
            gets(&qemu, "tap", runs, size, Some(&tap)),
        ));
        viewer.terminate(Duration::from_secs(10));
        tap.stop();
    }
    // 2. spicy's phodav, direct.
    {
        let qemu = Qemu::linux(&dir.path, "", "");
        let mut client = spicy_sharing(&x, qemu.port, &shared, &dir.path);
        std::thread::sleep(Duration::from_secs(3));
        rows.push(("spice-gtk phodav", "spicy straight to QEMU", gets(&qemu, "direct", runs, size, None)));
        client.terminate(Duration::from_secs(10));
    }
    // 3. spicy's phodav through spicetap, recording.
    {
        let qemu = Qemu::linux(&dir.path, "", "");
        let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &["--no-video"]);
        let mut client = spicy_sharing(&x, tap.port(), &shared, &dir.path);
        std::thread::sleep(Duration::from_secs(3));
        rows.push((
            "spice-gtk phodav",
            "spicy through spicetap, recording",
            gets(&qemu, "via", runs, size, Some(&tap)),
        ));
        client.terminate(Duration::from_secs(10));
        tap.stop();
    }

    println!("\nGET of a {mib} MiB file by the guest, {runs} runs per row:\n");
    println!("| share | path | MB/s | spicetap CPU s/GB |");
    println!("| --- | --- | ---: | ---: |");
    for (share, path, results) in rows {
        let mbs: Vec<String> = results.iter().map(|r| format!("{:.1}", r.0)).collect();
        let cpu: Vec<String> = results.iter().map(|r| r.1.map_or("—".into(), |c| format!("{c:.2}"))).collect();
        println!("| {share} | {path} | {} | {} |", mbs.join(", "), cpu.join(", "));
    }
}
