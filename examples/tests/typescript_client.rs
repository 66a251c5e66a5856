//! The TypeScript client (clients/typescript) against the example binaries:
//! `npm test` there builds the package, type-checks it (the type-level test
//! included) and runs its `node --test` suites against the chat, the
//! guide's performance program and the Rust client (`chat_client`).
//!
//! Its npm dependencies come from `scripts/setup`; when they are missing
//! this test runs `npm ci` itself. A missing node fails the test with a
//! message saying so, never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const SETUP: &str = "run scripts/setup to install node and the TypeScript client's dependencies";
/// The suites take seconds; this only guards against a hang.
const TIMEOUT: Duration = Duration::from_secs(300);

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("clients")
        .join("typescript")
}

fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("SIGNALBOX_CHAT_BIN", env!("CARGO_BIN_EXE_chat"))
        .env(
            "SIGNALBOX_CHAT_CLIENT_BIN",
            env!("CARGO_BIN_EXE_chat_client"),
        )
        .env(
            "SIGNALBOX_GUIDE_PERFORMANCE_BIN",
            env!("CARGO_BIN_EXE_guide_performance"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {SETUP}"));
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{program} {args:?} did not finish within {TIMEOUT:?}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// The count after `# name ` in node's test summary.
fn summary(stdout: &str, name: &str) -> Option<u64> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("# {name} "))?.trim().parse().ok())
}

#[test]
fn the_typescript_client_passes_its_node_tests() {
    let dir = package_dir();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!("node missing: {SETUP}"),
    }
    let marker = dir.join("node_modules").join(".package-lock.json");
    let lock = dir.join("package-lock.json");
    let stale = match (marker.metadata(), lock.metadata()) {
        (Ok(m), Ok(l)) => l.modified().unwrap() > m.modified().unwrap(),
        _ => true,
    };
    if stale {
        let out = run(
            "npm",
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
            &dir,
        );
        assert!(
            out.status.success(),
            "npm ci failed: {SETUP}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run("npm", &["test"], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let passed = summary(&stdout, "pass");
    let failed = summary(&stdout, "fail");
    assert!(
        out.status.success() && failed == Some(0) && passed.is_some_and(|n| n > 0),
        "npm test in clients/typescript: pass {passed:?}, fail {failed:?}\n{stdout}\n{stderr}"
    );
    // Every test counted ran: none skipped or left to do.
    for name in ["skipped", "todo", "cancelled"] {
        assert_eq!(
            summary(&stdout, name),
            Some(0),
            "{name} tests in clients/typescript\n{stdout}"
        );
    }
}
