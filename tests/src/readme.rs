//! The README's commands as tests run them: the shell lines of a block the README marks with
//! `<!-- readme-test: NAME ... -->` (up to the next such marker), so a test of them breaks
//! when the README drifts from what works; and a shell whose background jobs (the roles a
//! block starts with `&`) are stopped with it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's README.md.
pub fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// The shell lines of the README block marked `name`: its indented code lines, unindented,
/// in order. Panics when the README has no such block or it holds no code.
pub fn block(readme: &str, name: &str) -> String {
    let mut lines = readme.lines();
    let marker = |line: &str| {
        line.trim_start()
            .strip_prefix("<!-- readme-test: ")
            .map(|rest| rest.split([' ', '\t']).next().unwrap_or_default().to_string())
    };
    lines
        .by_ref()
        .find(|l| marker(l).as_deref() == Some(name))
        .unwrap_or_else(|| panic!("README.md has no block marked `<!-- readme-test: {name}`"));
    let code: Vec<&str> = lines
        .take_while(|l| marker(l).is_none())
        .filter_map(|l| l.strip_prefix("    ").or((l.trim().is_empty()).then_some("")))
        .collect();
    let text = code.join("\n").trim().to_string();
    assert!(!text.is_empty(), "README.md's block {name} holds no code");
    text
}

/// Replaces each README address by the test's, asserting that the README has it (a README
/// that changed its addresses must change the test too, not be run half-rewritten).
pub fn with_addresses(block: &str, addresses: &[(&str, String)]) -> String {
    let mut text = block.to_string();
    for (readme, test) in addresses {
        assert!(
            text.contains(readme),
            "the README's block no longer says {readme}:\n{block}"
        );
        text = text.replace(readme, test);
    }
    text
}

/// A free loopback port's address, `127.0.0.1:PORT`.
pub fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

/// A bash running a script in its own process group: whatever it starts in the background
/// is stopped (SIGTERM, then SIGKILL) when this is dropped.
pub struct Shell {
    child: Child,
    pub log: PathBuf,
}

impl Shell {
    /// Runs `script` with `set -euo pipefail` in `dir`, with `path_first` ahead of `PATH`
    /// and `env` set; stdout and stderr (the shell's and its jobs') go to `log`.
    pub fn start(script: &str, dir: &Path, path_first: &Path, env: &[(&str, &str)], log: &Path) -> Shell {
        let out = std::fs::File::create(log).expect("log file");
        let path = format!("{}:{}", path_first.display(), std::env::var("PATH").unwrap_or_default());
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(dir)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .process_group(0);
        // What the README's reader would not have set: the tests' own settings.
        for (name, _) in std::env::vars() {
            if name.starts_with("SIGHTLINE_") && name != "SIGHTLINE_TEST_BROKER" {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        Shell {
            child: command.spawn().expect("bash"),
            log: log.to_path_buf(),
        }
    }

    /// Waits up to `limit` for the shell itself to exit (its background jobs run on);
    /// panics with its output if it failed or did not end.
    pub fn wait(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let output = self.output();
                assert!(status.success(), "the script failed ({status}):\n{output}");
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "the script did not end within {limit:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the shell and its jobs wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        // The roles drain and exit on SIGTERM; whatever is left after that is killed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let alive = Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
