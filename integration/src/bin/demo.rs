//! The README's demo: a private containerd 2.1 (and 1.6, 1.7), a container run through myshim, and a
//! clean shutdown. `cargo run -p myshim-integration --bin demo`.

use myshim_integration::{Containerd, Version};

fn main() {
    for version in [Version::V1_6, Version::V1_7, Version::V2_1] {
        let containerd = Containerd::start(version, "demo");
        let out = containerd.run(
            "demo",
            &[],
            &["sh", "-c", "echo \"hello from myshim: pid $$, $(ls / | wc -l) entries in /, kernel $(uname -r)\""],
        );
        println!("containerd {}: {}", version.dir_name(), out.stdout.trim());
        if out.code != 0 {
            eprintln!("demo failed on containerd {}: {}", version.dir_name(), out.stderr);
            std::process::exit(1);
        }
        containerd.assert_no_leftovers();
    }
    println!("demo done: nothing left behind");
}
