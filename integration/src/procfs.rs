//! What /proc says about a process the tests watch (a shim): descriptors, memory, zombie children.

use std::fs;

/// Open descriptors and resident memory (KiB) of `pid`.
pub fn usage(pid: u32) -> (usize, u64) {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (fds, status_field(pid, "VmRSS:").unwrap_or(0))
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads:").unwrap_or(0)
}

/// Proportional set size (KiB) of `pid`, from `smaps_rollup`.
pub fn pss(pid: u32) -> u64 {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup.lines().find_map(|l| l.strip_prefix("Pss:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Children of `parent` that are zombies (exited, not reaped).
pub fn zombie_children(parent: u32) -> Vec<u32> {
    let ppid = format!("PPid:\t{parent}");
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.contains("State:\tZ") && status.lines().any(|l| l == ppid)
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"))
}

/// Descriptors of `pid` that are pipes or fifos: (descriptor, what it links to).
fn pipes_and_fifos(pid: u32) -> Vec<(String, String)> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|entry| {
            let link = fs::read_link(entry.path()).ok()?.display().to_string();
            let is_fifo = link.starts_with("pipe:") || fs::metadata(entry.path()).is_ok_and(|m| m.file_type().is_fifo());
            is_fifo.then(|| (entry.file_name().to_string_lossy().into_owned(), link))
        })
        .collect()
}

/// For a process whose output copy waits for an end-of-file that does not come: its pipes and fifos,
/// every other process that has one of them open too, and its children. One line each.
pub fn holders_of_pipes(pid: u32) -> Vec<String> {
    let own = pipes_and_fifos(pid);
    let mut lines: Vec<String> = own.iter().map(|(fd, link)| format!("{pid} fd {fd} → {link}")).collect();
    let comm = |p: u32| fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_owned();
    let cmdline = |p: u32| fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default().replace('\0', " ");
    let pids: Vec<u32> = fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    for other in pids.iter().copied().filter(|&p| p != pid) {
        for (fd, link) in pipes_and_fifos(other) {
            if own.iter().any(|(_, l)| *l == link) {
                lines.push(format!("held by {other} ({}) fd {fd} → {link}: {}", comm(other), cmdline(other)));
            }
        }
        let status = fs::read_to_string(format!("/proc/{other}/status")).unwrap_or_default();
        if status.lines().any(|l| l == format!("PPid:\t{pid}")) {
            let state = status.lines().find(|l| l.starts_with("State:")).unwrap_or_default().to_owned();
            lines.push(format!("child {other} ({}) {state}: {}", comm(other), cmdline(other)));
        }
    }
    lines
}

/// The paths of the unix sockets a process has open (listening ones among them), from its
/// descriptors' inodes and /proc/net/unix.
pub fn unix_socket_paths(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok()?.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    // Lines: Num RefCount Protocol Flags Type St Inode [Path]
    fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 8 && inodes.iter().any(|i| i == fields[6])).then(|| fields[7].to_owned())
        })
        .collect()
}
