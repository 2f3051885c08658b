//! The shim's command line (NUL-separated arguments), parsed the way containerd's flags are.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = data.split(|b| *b == 0).map(|arg| String::from_utf8_lossy(arg).into_owned());
    let _ = myshim_shim::flags::parse(args);
});
