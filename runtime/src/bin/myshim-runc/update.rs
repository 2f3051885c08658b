//! `update`: new resources for a container, as runc takes them: `--resources` (a file of
//! `LinuxResources` JSON, or `-` for stdin, what containerd's runc shim sends), or else runc's flags
//! for single resources (`--memory 64m`, `--pids-limit 30`, …); never both.

use std::fs;
use std::io::Read;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::LinuxResources;

use super::Args;

/// The resources `update`'s flags ask for (the container id stays in `args`).
pub fn resources(args: &mut Args) -> Result<LinuxResources> {
    let file = args.flag(&["--resources", "-r"]);
    let from_flags = flags(args)?;
    match file.as_deref() {
        Some(_) if from_flags != serde_json::json!({}) => bail!("update: --resources and the flags for single resources exclude each other"),
        None => serde_json::from_value(from_flags).context("the resources of update's flags"),
        Some(source) => {
            let text = if source == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("read the resources from stdin")?;
                text
            } else {
                fs::read_to_string(source).with_context(|| format!("read {source}"))?
            };
            serde_json::from_str(&text).context("parse the resources (LinuxResources JSON)")
        }
    }
}

/// runc update's flags for single resources, as `LinuxResources` JSON (`{}` when none is given).
/// Intel RDT is not supported, and its flags are refused.
fn flags(args: &mut Args) -> Result<serde_json::Value> {
    use serde_json::{json, Value};
    for unsupported in ["--l3-cache-schema", "--mem-bw-schema"] {
        if args.flag(&[unsupported]).is_some() {
            bail!("update {unsupported}: Intel RDT is not supported");
        }
    }
    let mut resources = json!({});
    let mut set = |section: &str, key: &str, value: Value| {
        resources.as_object_mut().into_iter().for_each(|r| {
            r.entry(section).or_insert_with(|| json!({}))[key] = value.clone();
        })
    };
    let number = |flag: &str, text: &str| -> Result<i64> { text.parse().with_context(|| format!("update {flag} {text:?}: not a number")) };
    for (flag, section, key) in [("--blkio-weight", "blockIO", "weight"), ("--cpu-share", "cpu", "shares"), ("--cpu-period", "cpu", "period"), ("--cpu-quota", "cpu", "quota"),
        ("--cpu-rt-period", "cpu", "realtimePeriod"), ("--cpu-rt-runtime", "cpu", "realtimeRuntime"), ("--cpu-idle", "cpu", "idle"), ("--pids-limit", "pids", "limit")]
    {
        if let Some(text) = args.flag(&[flag]) {
            set(section, key, json!(number(flag, &text)?));
        }
    }
    for (flag, key) in [("--cpuset-cpus", "cpus"), ("--cpuset-mems", "mems")] {
        if let Some(text) = args.flag(&[flag]) {
            set("cpu", key, json!(text));
        }
    }
    for (flag, key) in [("--memory", "limit"), ("--memory-reservation", "reservation"), ("--memory-swap", "swap"), ("--kernel-memory", "kernel"), ("--kernel-memory-tcp", "kernelTCP")] {
        if let Some(text) = args.flag(&[flag]) {
            set("memory", key, json!(parse_bytes(flag, &text)?));
        }
    }
    Ok(resources)
}

/// A size as runc's flags take it: bytes, or a number with a binary suffix (`64m`, `1G`, `512KiB`);
/// -1 for no limit.
fn parse_bytes(flag: &str, text: &str) -> Result<i64> {
    if text == "-1" {
        return Ok(-1);
    }
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => bail!("update {flag} {text:?}: not a size (a number, with k, m, g, t or p)"),
    };
    let value: f64 = number.parse().with_context(|| format!("update {flag} {text:?}: not a size"))?;
    Ok((value * (1u64 << shift) as f64) as i64)
}
