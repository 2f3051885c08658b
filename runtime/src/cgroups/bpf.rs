//! The cgroup v2 device controller: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, generated
//! from the spec's device rules and attached to the container's group.
//!
//! Semantics follow the v1 lists: rules apply in order, a later rule overriding an earlier one, and a
//! request is allowed when the last rule that covers it (device type, major, minor, and every access
//! asked for) allows it; nothing matching means denied. The program checks the rules from last to
//! first and returns at the first match; the devices every container keeps are checked before all.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Context, Error, Result};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    code: u8,
    registers: u8,
    offset: i16,
    immediate: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, offset: i16, immediate: i32) -> Instruction {
    Instruction { code, registers: dst | (src << 4), offset, immediate }
}

// Opcodes: class | operation | source.
const LOAD_WORD: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOVE_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOVE_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND_IMM: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const SHIFT_RIGHT_IMM: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JUMP_NOT_EQUAL_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// `struct bpf_cgroup_dev_ctx`: access_type (device type in the low 16 bits, access above), major, minor.
const DEVICE_BLOCK: i32 = 1;
const DEVICE_CHAR: i32 = 2;
const ACCESS_MKNOD: i32 = 1;
const ACCESS_READ: i32 = 2;
const ACCESS_WRITE: i32 = 4;

/// A rule in the program's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// None = any type.
    typ: Option<i32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: i32,
}

fn rule_of(rule: &LinuxDeviceCgroup) -> Result<Rule> {
    let typ = match rule.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEVICE_CHAR),
        Some(LinuxDeviceType::B) => Some(DEVICE_BLOCK),
        Some(LinuxDeviceType::P) => return Err(Error::spec("linux.resources.devices", "fifo rules have no meaning for the device controller")),
    };
    let mut access = 0;
    for c in rule.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            other => return Err(Error::spec("linux.resources.devices.access", format!("unknown access {other:?}"))),
        };
    }
    let number = |n: Option<i64>| n.filter(|n| *n >= 0).map(|n| n as u32);
    Ok(Rule { allow: rule.allow(), typ, major: number(rule.major()), minor: number(rule.minor()), access })
}

/// The program for `rules` (in spec order) followed by the devices every container keeps.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Instruction>> {
    let mut all: Vec<Rule> = rules.iter().map(rule_of).collect::<Result<_>>()?;
    for &(typ, major, minor, access) in super::v1::ALWAYS_ALLOWED_DEVICES {
        let access = access.chars().fold(0, |all, c| all | match c { 'r' => ACCESS_READ, 'w' => ACCESS_WRITE, _ => ACCESS_MKNOD });
        all.push(Rule { allow: true, typ: Some(if typ == 'b' { DEVICE_BLOCK } else { DEVICE_CHAR }), major, minor, access });
    }
    let mut code = vec![
        insn(LOAD_WORD, R2, R1, 0, 0), // r2 = access_type
        insn(MOVE_REG, R3, R2, 0, 0),
        insn(AND_IMM, R3, 0, 0, 0xffff), // r3 = device type
        insn(SHIFT_RIGHT_IMM, R2, 0, 0, 16), // r2 = requested access
        insn(LOAD_WORD, R4, R1, 4, 0), // r4 = major
        insn(LOAD_WORD, R5, R1, 8, 0), // r5 = minor
    ];
    let mut falls_through = true;
    for rule in all.iter().rev() {
        if !falls_through {
            break; // an earlier (later-checked) rule can never be reached
        }
        let mut checks = Vec::new();
        if let Some(typ) = rule.typ {
            checks.push(insn(JUMP_NOT_EQUAL_IMM, R3, 0, 0, typ));
        }
        if let Some(major) = rule.major {
            checks.push(insn(JUMP_NOT_EQUAL_IMM, R4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            checks.push(insn(JUMP_NOT_EQUAL_IMM, R5, 0, 0, minor as i32));
        }
        let full = ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD;
        let mut access_check = Vec::new();
        if rule.access != full {
            // The rule covers the request only if no access outside the rule's is asked for.
            access_check.push(insn(MOVE_REG, R1, R2, 0, 0));
            access_check.push(insn(AND_IMM, R1, 0, 0, full & !rule.access));
            access_check.push(insn(JUMP_NOT_EQUAL_IMM, R1, 0, 0, 0));
        }
        let verdict = [insn(MOVE_IMM, R0, 0, 0, rule.allow as i32), insn(EXIT, 0, 0, 0, 0)];
        // Every failing check jumps past the rest of this rule's block.
        let block_len = checks.len() + access_check.len() + verdict.len();
        falls_through = !checks.is_empty() || !access_check.is_empty();
        let start = code.len();
        code.extend(checks);
        code.extend(access_check);
        code.extend(verdict);
        let end = start + block_len;
        for (position, instruction) in code.iter_mut().enumerate().skip(start).take(block_len) {
            if instruction.code == JUMP_NOT_EQUAL_IMM {
                instruction.offset = (end - position - 1) as i16;
            }
        }
    }
    if falls_through {
        code.push(insn(MOVE_IMM, R0, 0, 0, 0));
        code.push(insn(EXIT, 0, 0, 0, 0));
    }
    Ok(code)
}

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Loads the program into the kernel.
pub fn load(program: &[Instruction]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: BPF_PROG_LOAD reads `attr` and the instruction, license and log buffers it points to,
    // all alive for the duration of the call; on success it returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const LoadAttr, std::mem::size_of::<LoadAttr>()) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        let verifier = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).trim().to_owned();
        return Err(Error::io("load the device filter (eBPF)", std::io::Error::new(error.kind(), format!("{error}: {verifier}"))));
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `program` to the cgroup at `dir`, replacing a filter attached there before.
pub fn attach(dir: &Path, program: &OwnedFd) -> Result<()> {
    let cgroup = std::fs::File::open(dir).context(|| format!("open cgroup {}", dir.display()))?;
    let attr = AttachAttr { target_fd: cgroup.as_raw_fd() as u32, attach_bpf_fd: program.as_raw_fd() as u32, attach_type: BPF_CGROUP_DEVICE, attach_flags: 0 };
    // SAFETY: BPF_PROG_ATTACH reads `attr`; both descriptors stay open for the call.
    if unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attr as *const AttachAttr, std::mem::size_of::<AttachAttr>()) } < 0 {
        return Err(Error::io(format!("attach the device filter to {}", dir.display()), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Generates, loads and attaches the device filter for `rules`.
pub fn apply_device_rules(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let program = program(rules)?;
    attach(dir, &load(&program)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn program_checks_rules_last_to_first() {
        let rules = vec![
            LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap(),
            LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(10).minor(229).access("rw").build().unwrap(),
        ];
        let code = program(&rules).unwrap();
        assert_eq!(code.last().unwrap().code, EXIT);
        // Every jump lands inside the program.
        for (i, instruction) in code.iter().enumerate() {
            if instruction.code == JUMP_NOT_EQUAL_IMM {
                assert!(i + 1 + (instruction.offset as usize) < code.len());
            }
        }
        // The fuse rule (checked before the deny-all) compares major 10 and minor 229.
        assert!(code.iter().any(|c| c.code == JUMP_NOT_EQUAL_IMM && c.immediate == 229));
    }
}
