//! Embeds the pinned user-agent data the processor parses with: uap-core's `regexes.yaml`
//! (browsers, operating systems, devices) and isbot's crawler patterns. They are third-party
//! data installed from npm by `scripts/install-deps.sh` (pinned there) into
//! `/usr/local/lib/sightline/ua` (or `$SIGHTLINE_UA_DATA`), never committed.
//!
//! When they are missing the build stops and says what to run.

use std::path::PathBuf;

const FILES: [&str; 3] = ["regexes.yaml", "isbot-patterns.json", "VERSIONS"];

fn main() {
    println!("cargo:rerun-if-env-changed=SIGHTLINE_UA_DATA");
    println!("cargo:rerun-if-env-changed=SIGHTLINE_LIB_DIR");
    let dir = std::env::var_os("SIGHTLINE_UA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("SIGHTLINE_LIB_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/local/lib/sightline"))
                .join("ua")
        });
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in FILES {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        if let Err(e) = std::fs::copy(&path, out.join(name)) {
            panic!(
                "\n\nThe user-agent data is missing: {} ({e}).\n\
                 Run `./scripts/install-deps.sh` (it installs uap-core's regexes.yaml and isbot's \
                 patterns, pinned, from npm into {}), or point SIGHTLINE_UA_DATA at a directory \
                 holding {}.\n\n",
                path.display(),
                dir.display(),
                FILES.join(", ")
            );
        }
    }
    // `uap-core 0.18.0\nisbot 5.2.3`: the versions become compile-time constants.
    let versions = std::fs::read_to_string(out.join("VERSIONS")).unwrap_or_default();
    for (package, var) in [
        ("uap-core", "SIGHTLINE_UAP_CORE_VERSION"),
        ("isbot", "SIGHTLINE_ISBOT_VERSION"),
    ] {
        let version = versions
            .lines()
            .find_map(|l| l.strip_prefix(package)?.strip_prefix(' '))
            .unwrap_or_else(|| {
                panic!(
                    "{}/VERSIONS names no {package} version: run ./scripts/install-deps.sh",
                    dir.display()
                )
            });
        println!("cargo:rustc-env={var}={}", version.trim());
    }
}
