//! Tells `coregate --version` how the binary was built: with profile-guided optimisation
//! (`scripts/build-pgo`), instrumented for it, or plainly. It reads the flags cargo passes to
//! the compiler; building the binary is cargo's.

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let has = |f: &str| flags.split('\x1f').any(|x| x.contains(f));
    let build = if has("profile-use") {
        " (profile-guided)"
    } else if has("profile-generate") {
        " (instrumented for profiling)"
    } else {
        ""
    };
    println!("cargo:rustc-env=COREGATE_BUILD={build}");
}
