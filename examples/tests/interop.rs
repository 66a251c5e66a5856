//! The third-party clients against the chat over WebSocket: the Node client
//! (npm `ws`, `@msgpack/msgpack`), the Python client (`websockets`,
//! `msgpack`) and the chat page in headless Debian chromium (playwright-core),
//! over `http://` (against the chat binary, which it restarts, with a Node
//! member on the TypeScript client) and over `https://`.
//!
//! Their dependencies come from `scripts/setup`; a missing one fails the
//! test with a message saying so, never a silent pass.

mod common;

use common::start_chat;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const SETUP: &str = "run scripts/setup to install the interop and browser test dependencies";
/// Each script has its own overall timeout; this one only guards the test.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn tests_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

/// Fails, pointing at scripts/setup, unless `program args` runs successfully.
fn require(what: &str, program: &str, args: &[&str], dir: &Path) {
    match Command::new(program).args(args).current_dir(dir).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{what} missing ({}): {SETUP}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("{what}: cannot run {program} ({e}): {SETUP}"),
    }
}

fn require_node_modules(dir: &Path, modules: &[&str]) {
    for module in modules {
        let path = dir.join("node_modules").join(module).join("package.json");
        assert!(
            path.is_file(),
            "npm module {module} missing in {}: {SETUP}",
            dir.display()
        );
    }
}

/// Runs a script to completion off the runtime, with a guard timeout.
async fn run(program: &'static str, args: Vec<String>, dir: PathBuf) -> Output {
    let child = tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(&args)
            .current_dir(&dir)
            // The browser test's native QUIC member (chat_page.mjs).
            .env(
                "SIGNALBOX_CHAT_CLIENT_BIN",
                env!("CARGO_BIN_EXE_chat_client"),
            )
            .output()
    });
    tokio::time::timeout(SCRIPT_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {SETUP}"))
}

/// Asserts the script passed and reported at least one check, and none failed.
fn assert_passed(name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "))
        .unwrap_or_else(|| panic!("{name}: no summary line\n{stdout}\n{stderr}"));
    assert!(
        out.status.success() && summary.ends_with(", 0 failed") && !summary.starts_with("0 passed"),
        "{name}: {summary}\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_ws_client_passes_every_check() {
    let dir = tests_dir("interop");
    require("node", "node", &["--version"], &dir);
    require_node_modules(&dir, &["ws", "@msgpack/msgpack"]);
    let (_hub, addr) = start_chat().await;
    let out = run(
        "node",
        vec!["node_ws_client.mjs".into(), format!("ws://{addr}/ws")],
        dir,
    )
    .await;
    assert_passed("node_ws_client.mjs", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_websockets_client_passes_every_check() {
    let dir = tests_dir("interop");
    require(
        "python3 with websockets and msgpack",
        "python3",
        &["-c", "import websockets.asyncio.client, msgpack"],
        &dir,
    );
    let (_hub, addr) = start_chat().await;
    let out = run(
        "python3",
        vec![
            "python_websockets_client.py".into(),
            format!("ws://{addr}/ws"),
        ],
        dir,
    )
    .await;
    assert_passed("python_websockets_client.py", &out);
}

/// The page, in chromium, against the chat binary, which the script starts
/// itself: it kills and restarts it on the same port (server restart case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_works_in_headless_chromium() {
    let dir = tests_dir("browser");
    require("node", "node", &["--version"], &dir);
    require_node_modules(&dir, &["playwright-core", "ws"]);
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} missing: {SETUP}"
    );
    let out = run(
        "node",
        vec!["chat_page.mjs".into(), env!("CARGO_BIN_EXE_chat").into()],
        dir,
    )
    .await;
    assert_passed("chat_page.mjs", &out);
}

/// The page over `https://` from the chat's TLS listener, its WebSockets
/// `wss://` (chromium trusts the server's key only, see chat_page.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_works_over_https_in_headless_chromium() {
    let dir = tests_dir("browser");
    require("node", "node", &["--version"], &dir);
    require_node_modules(&dir, &["playwright-core", "ws"]);
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} missing: {SETUP}"
    );
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let cert_file =
        std::env::temp_dir().join(format!("signalbox-https-page-{}.pem", std::process::id()));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    let identity = signalbox::transport::Identity::from_pem(
        cert_pem.as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let hub = signalbox_examples::chat::hub();
    let server = signalbox_examples::chat::ws_builder(hub.clone())
        .identity(identity)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());

    let out = run(
        "node",
        vec![
            "chat_page.mjs".into(),
            format!("https://{addr}"),
            cert_file.display().to_string(),
        ],
        dir,
    )
    .await;
    let _ = std::fs::remove_file(&cert_file);
    assert_passed("chat_page.mjs over https", &out);
}
