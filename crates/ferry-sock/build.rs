//! Compiles the C BPF programs in `bpf/` with clang-14 into OUT_DIR, where `src/kernel.rs`
//! embeds them with `include_bytes!`. Rust-written BPF cannot be built on this toolchain
//! (bpf-linker needs a newer LLVM than Debian 12 ships), see the crate docs.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["sock_lb"];
const CLANG: &str = "clang-14";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    // Debian puts <asm/types.h> under the multiarch include directory.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");

    for name in PROGRAMS {
        let src = manifest.join("bpf").join(format!("{name}.c"));
        let obj = out.join(format!("{name}.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(CLANG)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-I{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "ferry-sock: {CLANG} failed ({s}) compiling {}; the error is above",
                src.display()
            ),
            Err(e) => panic!(
                "ferry-sock: cannot run {CLANG} ({e}). The socket load balancer's BPF programs \
                 are C compiled with clang-14 and need libbpf-dev's headers: \
                 `apt-get install clang-14 libbpf-dev` (scripts/setup.sh installs both)"
            ),
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
