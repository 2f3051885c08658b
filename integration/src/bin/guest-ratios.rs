//! Performance on the guest lane's systemd host, as ratios only (the guest runs under software
//! emulation, so absolute times mean little): `ctr run --rm … true` through containerd 2.1 with myshim
//! and with containerd's runc shim and runc, interleaved, under the cgroupfs driver and under
//! systemd's; and the shim's memory holding one container under the systemd driver (the target is
//! the static release build's: `MYSHIM_BIN_DIR` names it). Prints a table; asserts nothing about speed.

use std::time::Instant;

use myshim_integration::containerd::RUNTIME;
use myshim_integration::{image, procfs, Containerd, Version};

/// Interleaved rounds per driver: a report of each lane run, kept short (every run costs about 5 s of
/// emulation).
const RUNS: usize = 5;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn shim_pid(c: &Containerd, binary: &str, id: &str) -> Option<u32> {
    let socket = c.socket().display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ");
        cmdline.contains(binary) && cmdline.contains(&socket) && cmdline.contains(&format!("-id {id} "))
    })
}

fn main() {
    let c = Containerd::start(Version::V2_1, "guest-ratios");
    // (name, runtime flags, flags for the systemd driver)
    let runtimes: [(&str, Vec<&str>, Vec<&str>); 2] = [("myshim", vec!["--runtime", RUNTIME], vec![]), ("runc", vec!["--runtime", "io.containerd.runc.v2"], vec!["--runc-systemd-cgroup"])];
    println!("| guest: containerd 2.1, medians of {RUNS} interleaved runs | myshim | runc | myshim / runc |");
    println!("|---|---|---|---|");
    for driver in ["cgroupfs", "systemd"] {
        let mut samples = [Vec::new(), Vec::new()];
        for round in 0..RUNS {
            for (i, (name, flags, systemd_flags)) in runtimes.iter().enumerate() {
                let id = format!("ratio-{name}-{driver}-{round}");
                let cgroup = if driver == "systemd" { format!("system.slice:{}:{id}", c.namespace) } else { format!("/{}/{id}", c.namespace) };
                let mut args = vec!["run", "--rm", "--cgroup", &cgroup];
                args.extend(flags.iter().copied());
                if driver == "systemd" {
                    args.extend(systemd_flags.iter().copied());
                }
                args.extend([image::BUSYBOX, &id, "true"]);
                c.track(&id);
                let started = Instant::now();
                let out = c.ctr(&args);
                assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
                samples[i].push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (mine, theirs) = (median(samples[0].clone()), median(samples[1].clone()));
        println!("| `ctr run --rm … true`, {driver} driver | {mine:.0} ms | {theirs:.0} ms | **{:.2}×** |", mine / theirs);
    }
    // Memory of the shim holding one container, under the systemd driver.
    let mut rss = Vec::new();
    for (name, flags, systemd_flags) in &runtimes {
        let id = format!("mem-{name}");
        let cgroup = format!("system.slice:{}:{id}", c.namespace);
        let mut args = vec!["run", "-d", "--cgroup", &cgroup];
        args.extend(flags.iter().copied());
        args.extend(systemd_flags.iter().copied());
        args.extend([image::BUSYBOX, &id, "sleep", "100000"]);
        c.track(&id);
        c.ctr(&args).ok();
        std::thread::sleep(std::time::Duration::from_secs(2));
        let binary = if *name == "myshim" { "containerd-shim-myshim-v1" } else { "containerd-shim-runc-v2" };
        rss.push(shim_pid(&c, binary, &id).map(|pid| procfs::usage(pid).1).unwrap_or(0));
        c.remove(&id);
    }
    println!("| shim RSS holding one container, systemd driver | {:.1} MB | {:.1} MB | **{:.2}×** |", rss[0] as f64 / 1024.0, rss[1] as f64 / 1024.0, rss[0] as f64 / rss[1] as f64);
    c.assert_no_leftovers();
}
