//! Builds the eBPF object (`qsock-ebpf`) for `bpfel-unknown-none` with the
//! nightly toolchain and bpf-linker, so `cargo build` on the workspace builds
//! the data path too. Prerequisites come from `scripts/setup.sh`.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest.join("../qsock-ebpf");
    let common_dir = manifest.join("../qsock-common");
    for p in [ebpf_dir.join("src"), ebpf_dir.join("Cargo.toml"), common_dir.join("src")] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out.join("ebpf-target");

    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf_dir)
        .args(["+nightly", "build", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Do not leak the host build's settings into the BPF build.
    for (k, _) in env::vars() {
        if k.starts_with("CARGO_") || k.starts_with("RUSTC") || k == "RUSTUP_TOOLCHAIN" || k == "RUSTFLAGS" || k == "RUSTDOC" {
            cmd.env_remove(k);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo for the eBPF build: {e}"));
    if !status.success() {
        panic!("building qsock-ebpf failed; run `bash scripts/setup.sh` to install the nightly rust-src and bpf-linker");
    }
    let obj = target_dir.join("bpfel-unknown-none/release/qsock");
    std::fs::copy(&obj, out.join("qsock.bpf.o")).unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
}
