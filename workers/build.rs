//! Builds fanout-init (`init/main.rs`), the first process of every exec
//! and lambda container, with the same compiler and target as the crate,
//! for `src/external/process.rs` to embed. It uses the standard library
//! alone, so one rustc call builds it: linked statically where the C
//! library allows (no dynamic loader at each start: an exec invocation
//! starts one), else dynamically.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=init/main.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("fanout-init");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let build = |statically: bool| {
        let mut cmd = Command::new(&rustc);
        cmd.args(["--edition", "2024", "--crate-name", "fanout_init", "--crate-type", "bin", "--target", &target])
            .args(["-C", "opt-level=3", "-C", "panic=abort", "-C", "strip=symbols", "-C", "debuginfo=0"])
            .arg("-o")
            .arg(&out)
            .arg("init/main.rs");
        if statically {
            cmd.args(["-C", "target-feature=+crt-static"]).stderr(std::process::Stdio::null());
        }
        if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
            let mut a = std::ffi::OsString::from("linker=");
            a.push(linker);
            cmd.arg("-C").arg(a);
        }
        cmd.status().expect("cannot run rustc to build fanout-init")
    };
    if build(true).success() {
        return;
    }
    let status = build(false);
    assert!(status.success(), "rustc failed to build fanout-init (workers/init/main.rs): {status}");
}
