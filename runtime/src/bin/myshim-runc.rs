//! `myshim-runc`: a runc-compatible command line over the runtime library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use myshim_runtime::{state, sys, Container, CreateOptions, Runtime, Stdio};

const DEFAULT_ROOT: &str = "/run/myshim-runc";

struct Global {
    root: PathBuf,
}

fn main() -> ExitCode {
    myshim_runtime::run_helper_if_requested();
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("myshim-runc: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Splits `--flag value`, `--flag=value` and positional arguments.
struct Args {
    items: Vec<String>,
}

impl Args {
    fn flag(&mut self, names: &[&str]) -> Option<String> {
        let i = self.items.iter().position(|a| names.iter().any(|n| a == n || a.starts_with(&format!("{n}="))))?;
        let item = self.items.remove(i);
        match item.split_once('=') {
            Some((_, value)) => Some(value.to_owned()),
            None if i < self.items.len() => Some(self.items.remove(i)),
            None => None,
        }
    }

    fn switch(&mut self, names: &[&str]) -> bool {
        match self.items.iter().position(|a| names.contains(&a.as_str())) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    fn positional(&mut self, what: &str) -> Result<String> {
        match self.items.iter().position(|a| !a.starts_with('-')) {
            Some(i) => Ok(self.items.remove(i)),
            None => bail!("missing {what}"),
        }
    }
}

fn run(argv: Vec<String>) -> Result<u8> {
    let mut args = Args { items: argv };
    let global = Global { root: args.flag(&["--root"]).unwrap_or_else(|| DEFAULT_ROOT.into()).into() };
    let verb = args.positional("command (create, start, state, kill, delete, run)")?;
    match verb.as_str() {
        "create" => {
            let id = args.positional("container id")?;
            let bundle = bundle(&mut args)?;
            create(&global, &id, bundle)?;
            Ok(0)
        }
        "start" => {
            let id = args.positional("container id")?;
            load(&global, &id)?.start()?;
            Ok(0)
        }
        "run" => {
            let id = args.positional("container id")?;
            let bundle = bundle(&mut args)?;
            sys::become_child_subreaper()?;
            let mut container = create(&global, &id, bundle)?;
            container.start()?;
            let code = sys::wait_for_exit(container.pid()).context("wait for the container")?;
            container.destroy()?;
            Ok(code as u8)
        }
        "state" => {
            let id = args.positional("container id")?;
            let container = load(&global, &id)?;
            let s = container.state();
            let status = if container.is_created() {
                "created"
            } else if s.init_is_alive() {
                "running"
            } else {
                "stopped"
            };
            let json = serde_json::json!({
                "ociVersion": "1.2.0",
                "id": s.id,
                "status": status,
                "pid": if status == "stopped" { 0 } else { s.pid },
                "bundle": s.bundle,
                "annotations": s.annotations,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(0)
        }
        "kill" => {
            let all = args.switch(&["--all", "-a"]);
            let id = args.positional("container id")?;
            let signal = args.positional("signal").unwrap_or_else(|_| "SIGTERM".into());
            load(&global, &id)?.signal(parse_signal(&signal)?, all)?;
            Ok(0)
        }
        "delete" => {
            let force = args.switch(&["--force", "-f"]);
            let id = args.positional("container id")?;
            let container = load(&global, &id)?;
            if container.state().init_is_alive() && !container.is_created() && !force {
                bail!("container {id} is running: stop it first or use --force");
            }
            container.destroy()?;
            Ok(0)
        }
        other => bail!("unknown command {other:?}"),
    }
}

fn bundle(args: &mut Args) -> Result<PathBuf> {
    let bundle = args.flag(&["--bundle", "-b"]).map(PathBuf::from).unwrap_or(std::env::current_dir()?);
    Ok(std::fs::canonicalize(&bundle).with_context(|| format!("bundle {}", bundle.display()))?)
}

fn create(global: &Global, id: &str, bundle: PathBuf) -> Result<Container> {
    std::fs::create_dir_all(&global.root).with_context(|| format!("create root {}", global.root.display()))?;
    let stdio = Stdio {
        stdin: std::io::stdin().as_fd_owned()?,
        stdout: std::io::stdout().as_fd_owned()?,
        stderr: std::io::stderr().as_fd_owned()?,
    };
    let options = CreateOptions { id, bundle: &bundle, state_dir: state::dir_in_root(&global.root, id)?, rootfs_mounts: &[], stdio };
    Ok(Container::create(&Runtime::default(), options)?)
}

fn load(global: &Global, id: &str) -> Result<Container> {
    let dir = state::dir_in_root(&global.root, id)?;
    if !dir.exists() {
        bail!("container {id} does not exist");
    }
    Ok(Container::load(&dir)?)
}

fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(n) = text.parse() {
        return Ok(n);
    }
    let name = text.to_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    let signal: nix::sys::signal::Signal = name.parse().with_context(|| format!("unknown signal {text:?}"))?;
    Ok(signal as u32)
}

trait DupOwned {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> DupOwned for T {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}
