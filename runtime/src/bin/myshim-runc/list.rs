//! `list`: the containers under `--root`, as runc lists them.

use std::fs;

use anyhow::{bail, Result};
use myshim_runtime::Container;

use super::{oci_state, Global};

/// `list`: the containers under `--root`, as runc prints them (a table, or `--format json`).
pub fn print(global: &Global, format: &str, quiet: bool) -> Result<()> {
    let mut containers = Vec::new();
    if let Ok(entries) = fs::read_dir(&global.root) {
        for entry in entries.flatten() {
            // Directories that hold no container state (a half-made one) are not listed.
            let Ok(container) = Container::load(&entry.path()) else { continue };
            let mut state = oci_state(&container);
            let uid = std::os::unix::fs::MetadataExt::uid(&entry.metadata()?);
            state["owner"] = user_name(uid).into();
            containers.push(state);
        }
    }
    containers.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    if quiet {
        for c in &containers {
            println!("{}", c["id"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&containers)?),
        "table" => {
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
            let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            let rows: Vec<Vec<String>> = containers
                .iter()
                .map(|c| vec![text(&c["id"]), text(&c["pid"]), text(&c["status"]), text(&c["bundle"]), text(&c["created"]), text(&c["owner"])])
                .collect();
            let widths: Vec<usize> = (0..header.len()).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len(), 11]).max().unwrap_or(0) + 1).collect();
            let line = |cells: Vec<String>| cells.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<String>().trim_end().to_owned();
            println!("{}", line(header.iter().map(|h| h.to_string()).collect()));
            for row in rows {
                println!("{}", line(row));
            }
        }
        other => bail!("list --format {other:?}: table or json"),
    }
    Ok(())
}

/// The name of a user id from /etc/passwd, or `#uid` (as runc shows an unknown owner).
fn user_name(uid: u32) -> String {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == uid.to_string())
        .map(|fields| fields[0].to_owned())
        .unwrap_or_else(|| format!("#{uid}"))
}
