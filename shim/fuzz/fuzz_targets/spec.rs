//! A bundle's config.json: parsed and validated as the runtime does before creating anything.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = myshim_runtime::spec::parse(data) {
        let _ = myshim_runtime::validate::validate(&spec);
    }
});
