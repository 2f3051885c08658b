//! Soak test of containerd 1.7's gRPC shim connections left idle (not part of CI: it takes the
//! better part of an hour). `cargo run -p myshim-integration --bin grpc-soak -- [minutes]`
//!
//! Two private containerd 1.7 instances with myshim over gRPC, one with the shim's keepalive (a Wait
//! kept in flight through containerd's Tasks API) and one without. In each, one container runs
//! detached (`ctr run -d`: nobody waits) and one in the foreground (`ctr run`: a Wait in flight).
//! Nothing touches the containers during the soak (a task listing would make containerd call the
//! shims); after it the report says which tasks containerd still holds and which it declared dead.

use std::process::Stdio;
use std::time::{Duration, Instant};

use myshim_integration::containerd::RUNTIME;
use myshim_integration::{image, Containerd, Version};

fn main() {
    let minutes: u64 = std::env::args().nth(1).and_then(|m| m.parse().ok()).unwrap_or(35);
    let with = Containerd::start_with(Version::V1_7, "soak-keepalive", Some("protocol = \"grpc\"\n"));
    let without = Containerd::start_with(Version::V1_7, "soak-plain", Some("protocol = \"grpc\"\ngrpc_keepalive = false\n"));
    let mut foreground = Vec::new();
    for (c, prefix) in [(&with, "keepalive"), (&without, "plain")] {
        c.run_detached(&format!("{prefix}-detached"), &["sleep", "100000"]);
        let id = format!("{prefix}-waited");
        c.track(&id);
        foreground.push(
            c.ctr_command(&["run", "--runtime", RUNTIME, "--rm", image::BUSYBOX, &id, "sleep", "100000"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ctr run"),
        );
    }
    let started = Instant::now();
    println!("soaking for {minutes} minutes (containerd's idle timeout is 30)");
    // Watched through containerd's log only: asking containerd for task states would make it call the
    // shims, and any call in flight resets the idle timer this soak is about.
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(60));
        let line: Vec<String> = [(&with, "keepalive"), (&without, "plain")]
            .iter()
            .flat_map(|(c, p)| ["detached", "waited"].map(|k| format!("{p}-{k}={}", if disconnected(c, &format!("{p}-{k}")) { "disconnected" } else { "connected" })))
            .collect();
        println!("{:>3} min: {}", started.elapsed().as_secs() / 60, line.join(" "));
    }
    println!("\n| containerd 1.7, gRPC | container | task after {minutes} min | containerd log |");
    println!("|---|---|---|---|");
    for (c, prefix) in [(&with, "keepalive"), (&without, "plain")] {
        for kind in ["detached", "waited"] {
            let id = format!("{prefix}-{kind}");
            let status = c.task_status(&id).unwrap_or_else(|| "gone".into());
            let dead = disconnected(c, &id);
            let setup = if prefix == "keepalive" { "with the shim's keepalive" } else { "without keepalive" };
            let wait = if kind == "waited" { "`ctr run` (Wait in flight)" } else { "`ctr run -d` (no Wait)" };
            println!("| {setup} | {wait} | {status} | {} |", if dead { "shim disconnected, cleaned up" } else { "connected" });
        }
    }
    for mut child in foreground {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (c, prefix) in [(&with, "keepalive"), (&without, "plain")] {
        c.remove(&format!("{prefix}-detached"));
        c.remove(&format!("{prefix}-waited"));
    }
}

/// Whether containerd logged that it lost the shim of container `id`.
fn disconnected(c: &Containerd, id: &str) -> bool {
    c.log_lines("shim disconnected").iter().any(|l| l.contains(&format!("id={id} ")))
}
