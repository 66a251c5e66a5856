//! The chat binary as a deployable server: a certificate from a (test) CA
//! through `--tls-cert`/`--tls-key` for `wss://`, the page over `https://`
//! and QUIC; clients that do not trust the CA refused; every flag from the
//! environment; JSON logs.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use signalbox::client::{ConnectError, Connector, Link};
use signalbox::codec::{Meta, WireCodec};
use signalbox::transport::Inbound;
use signalbox_quic::QuicConnector;
use signalbox_ws::WsConnector;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A directory of PEM files, removed on drop: a test CA, a server
/// certificate for `localhost` and `127.0.0.1` signed by it, and an
/// unrelated CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "signalbox-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let ca = test_ca("signalbox test CA");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "chat server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let other = test_ca("unrelated CA");

        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// The chat binary on free ports; killed on drop.
struct Chat {
    child: Child,
    ws: SocketAddr,
    quic: SocketAddr,
    /// Reads a piped stderr as it comes (a full pipe would stall the
    /// server), returning all of it at the end.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Chat {
    /// Starts `chat` with `args` and `envs` (stderr inherited unless
    /// `stderr` says otherwise) and reads its `listening` line.
    fn start(args: &[&str], envs: &[(&str, &Path)], stderr: Stdio) -> Chat {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
        command.args(args);
        // Only what the test sets: none of the runner's settings or log level.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SIGNALBOX_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("chat starts");
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut all = String::new();
                let _ = pipe.read_to_string(&mut all);
                all
            })
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        // docs/PROTOCOL.md §9: `listening ws=… quic=…`
        let (ws, quic) = line
            .trim()
            .strip_prefix("listening ws=")
            .and_then(|rest| rest.split_once(" quic="))
            .unwrap_or_else(|| panic!("unexpected {line:?}"));
        Chat {
            ws: ws.parse().expect("ws address"),
            quic: quic.parse().expect("quic address"),
            child,
            stderr,
        }
    }

    /// Starts `chat` on free ports with the test certificate from the flags.
    fn with_tls_flags(pki: &Pki, extra: &[&str], stderr: Stdio) -> Chat {
        let cert = pki.path("server.pem");
        let key = pki.path("server.key");
        let mut args = vec![
            "--ws",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Chat::start(&args, &[], stderr)
    }

    fn wss_url(&self) -> String {
        format!("wss://localhost:{}/ws", self.ws.port())
    }

    /// SIGTERM, then the exit status and the piped stderr, if any.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().expect("exits");
        let stderr = self
            .stderr
            .take()
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One chat client over a [`Link`] from a transport's connector.
struct Member {
    link: Link,
    codec: WireCodec,
    user_id: String,
}

impl Member {
    async fn connect(connector: impl Connector) -> Member {
        let codec = connector.codec();
        let link = tokio::time::timeout(WAIT, connector.connect())
            .await
            .expect("connects in time")
            .expect("connects");
        Member {
            link,
            codec,
            user_id: String::new(),
        }
    }

    async fn send(&mut self, ty: &str, payload: Value) {
        let frame = self
            .codec
            .encode(ty, &Meta::default(), Some(&payload))
            .unwrap();
        self.link.sink.send_batch(&[frame.into()]).await.unwrap();
    }

    /// The payload of the next message of type `ty`, skipping others.
    async fn next(&mut self, ty: &str) -> Value {
        let wait = async {
            loop {
                match self.link.source.recv().await {
                    Ok(Some(Inbound::Message(frame))) => {
                        let envelope = self.codec.decode(frame).unwrap();
                        if envelope.ty == ty {
                            return envelope.decode_payload::<Value>().unwrap();
                        }
                    }
                    Ok(Some(_)) => {}
                    other => panic!("waiting for {ty}: {other:?}"),
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no {ty} in time"))
    }

    async fn join(&mut self, room: &str, name: &str) {
        self.send("JOIN_ROOM", json!({"roomId": room, "username": name}))
            .await;
        let members = self.next("ROOM_MEMBERS").await;
        let me = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["username"] == name)
            .unwrap_or_else(|| panic!("{name} not in {members}"));
        self.user_id = me["userId"].as_str().unwrap().to_owned();
    }
}

fn wss_trusting(chat: &Chat, pem: &[u8], codec: &str) -> WsConnector {
    WsConnector::new(&chat.wss_url(), codec)
        .unwrap()
        .tls(signalbox_ws::tls::client_config(pem).unwrap())
}

/// A wss:// client and a QUIC client, both trusting the CA, join a room and
/// each hears the other.
async fn chat_over_both(chat: &Chat, ca: &[u8], room: &str) {
    let mut web = Member::connect(wss_trusting(chat, ca, "json")).await;
    let mut quic = Member::connect(QuicConnector::new(chat.quic, ca, "msgpack").unwrap()).await;
    web.join(room, "web").await;
    quic.join(room, "quic").await;

    web.send(
        "SEND_MESSAGE",
        json!({"roomId": room, "text": "hello from wss"}),
    )
    .await;
    for member in [&mut web, &mut quic] {
        let message = member.next("NEW_MESSAGE").await;
        assert_eq!(message["text"], "hello from wss");
    }
    quic.send(
        "SEND_MESSAGE",
        json!({"roomId": room, "text": "hello from quic"}),
    )
    .await;
    let sender = quic.user_id.clone();
    for member in [&mut web, &mut quic] {
        let message = member.next("NEW_MESSAGE").await;
        assert_eq!(message["text"], "hello from quic");
        assert_eq!(message["userId"], sender.as_str());
    }
}

/// `GET path` over TLS trusting `ca`: the status line, headers and body.
async fn https_get(addr: SocketAddr, ca: &[u8], path: &str) -> (String, Vec<u8>) {
    let config = signalbox_ws::tls::client_config(ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with a client trusting the CA");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    // The server may end the TLS session without close_notify after
    // `Connection: close`; what was read until then is the response.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    (
        String::from_utf8_lossy(&response[..split]).to_ascii_lowercase(),
        response[split + 4..].to_vec(),
    )
}

#[tokio::test]
async fn wss_https_and_quic_serve_the_certificate_from_the_flags() {
    let pki = Pki::new();
    let ca = pki.read("ca.pem");
    let chat = Chat::with_tls_flags(&pki, &[], Stdio::inherit());

    chat_over_both(&chat, &ca, "tls-flags").await;

    // The page comes over https:// from the same listener, and it picks
    // wss:// by itself when loaded that way.
    let (head, body) = https_get(chat.ws, &ca, "/").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert_eq!(body, signalbox_examples::chat::INDEX_HTML);
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains(r#"location.protocol === "https:" ? "wss://" : "ws://""#),
        "the page no longer picks its scheme from the page's"
    );

    // WebTransport on the QUIC port, with the operator's certificate: no
    // hash for browsers to pin (docs/PROTOCOL.md §9).
    let (head, body) = https_get(chat.ws, &ca, "/webtransport").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let info: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        info,
        serde_json::json!({ "port": chat.quic.port(), "path": "/wt" })
    );

    // Plain ws:// to the TLS listener does not get a WebSocket.
    let plain = WsConnector::new(&format!("ws://127.0.0.1:{}/ws", chat.ws.port()), "json")
        .unwrap()
        .connect_timeout(WAIT);
    assert!(plain.connect().await.is_err());

    let (status, _) = chat.stop();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn clients_that_do_not_trust_the_ca_are_refused_with_a_tls_error() {
    let pki = Pki::new();
    let ca = pki.read("ca.pem");
    let other = pki.read("other-ca.pem");
    let chat = Chat::with_tls_flags(&pki, &[], Stdio::inherit());

    let refused = |result: Result<Link, ConnectError>, who: &str| match result {
        Err(ConnectError::Refused(reason)) => {
            assert!(
                reason.contains("UnknownIssuer"),
                "{who}: refused, but for {reason:?}"
            );
        }
        Err(other) => panic!("{who}: {other:?}, not a TLS refusal"),
        Ok(_) => panic!("{who}: connected"),
    };

    // wss:// with no TLS configuration trusts the public roots.
    let public = WsConnector::new(&chat.wss_url(), "json").unwrap();
    refused(public.connect().await, "wss, public roots");
    refused(
        wss_trusting(&chat, &other, "json").connect().await,
        "wss, an unrelated CA",
    );
    let public = QuicConnector::with_public_roots(chat.quic, "localhost", "json").unwrap();
    refused(public.connect().await, "QUIC, public roots");
    let unrelated = QuicConnector::new(chat.quic, &other, "json").unwrap();
    refused(unrelated.connect().await, "QUIC, an unrelated CA");

    // The server took no harm: clients that trust the CA still chat.
    chat_over_both(&chat, &ca, "after-refusals").await;
}

#[tokio::test]
async fn every_setting_comes_from_the_environment_and_a_flag_wins() {
    let pki = Pki::new();
    let ca = pki.read("ca.pem");
    let cert_out = pki.path("written.pem");
    let not_an_address = Path::new("not an address");
    let free = Path::new("127.0.0.1:0");
    let json = Path::new("json");
    let stderr = Stdio::piped();
    let chat = Chat::start(
        &["--quic", "127.0.0.1:0"],
        &[
            ("SIGNALBOX_WS", free),
            // The flag above wins over this.
            ("SIGNALBOX_QUIC", not_an_address),
            ("SIGNALBOX_TLS_CERT", &pki.path("server.pem")),
            ("SIGNALBOX_TLS_KEY", &pki.path("server.key")),
            ("SIGNALBOX_CERT_OUT", &cert_out),
            ("SIGNALBOX_LOG_FORMAT", json),
        ],
        stderr,
    );
    // TLS from the environment: both listeners serve the CA's certificate,
    // and --cert-out wrote it.
    chat_over_both(&chat, &ca, "from-env").await;
    assert_eq!(
        std::fs::read(&cert_out).unwrap(),
        pki.read("server.pem"),
        "SIGNALBOX_CERT_OUT"
    );
    let (status, stderr) = chat.stop();
    assert!(status.success(), "{status:?}");
    let lines = json_lines(&stderr);
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "listening"),
        "{stderr}"
    );

    // SIGNALBOX_PRESENCE_REFRESH is read (and checked) when SIGNALBOX_REDIS
    // is set.
    let output = Command::new(env!("CARGO_BIN_EXE_chat"))
        .env("SIGNALBOX_REDIS", "redis://127.0.0.1:1")
        .env("SIGNALBOX_PRESENCE_REFRESH", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--presence-refresh 0: not a positive number of seconds"),
        "{stderr}"
    );
}

/// Every option in `--help` names its environment variable.
#[test]
fn the_help_names_an_environment_variable_for_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // Options are blocks starting at a `--flag` line, ending at a blank
    // line followed by the next option.
    let mut flags = Vec::new();
    let mut current: Option<(String, bool)> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || trimmed.starts_with("-h,") || trimmed.starts_with("-V,") {
            if let Some(done) = current.take() {
                flags.push(done);
            }
            let name = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap()
                .to_owned();
            current = Some((name, false));
        } else if trimmed.starts_with("[env: SIGNALBOX_")
            && let Some((_, env)) = current.as_mut()
        {
            *env = true;
        }
    }
    flags.extend(current);
    let without: Vec<_> = flags
        .iter()
        .filter(|(name, env)| !env && name != "--help" && name != "--version")
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(flags.len() >= 8, "{help}");
    assert!(without.is_empty(), "no SIGNALBOX_ variable: {without:?}");
    for name in [
        "SIGNALBOX_WS",
        "SIGNALBOX_TLS_CERT",
        "SIGNALBOX_TLS_KEY",
        "SIGNALBOX_LOG_FORMAT",
    ] {
        assert!(help.contains(&format!("[env: {name}")), "{name}");
    }
    // The Redis URL may carry a password: its value is never shown.
    assert!(help.contains("[env: SIGNALBOX_REDIS]"), "{help}");
}

/// Parses every line of `stderr` as a JSON object of tracing-subscriber's
/// JSON format.
fn json_lines(stderr: &str) -> Vec<Value> {
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(value.get(key).is_some(), "no {key}: {line}");
            }
            value
        })
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    lines
}

#[tokio::test]
async fn json_logs_are_one_json_object_per_line() {
    let pki = Pki::new();
    let ca = pki.read("ca.pem");
    let chat = Chat::start(
        &[
            "--ws",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--tls-cert",
            pki.path("server.pem").to_str().unwrap(),
            "--tls-key",
            pki.path("server.key").to_str().unwrap(),
        ],
        &[("RUST_LOG", Path::new("debug"))],
        Stdio::piped(),
    );
    chat_over_both(&chat, &ca, "json-logs").await;
    // A failed TLS handshake is logged (at debug) too.
    let mut tcp = tokio::net::TcpStream::connect(chat.ws).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut sink)).await;
    let (status, stderr) = chat.stop();
    assert!(status.success(), "{status:?}");

    let lines = json_lines(&stderr);
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no listening event: {stderr}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["tls"], true);
    assert!(listening["fields"]["ws"].is_string(), "{listening}");
    assert!(listening["fields"]["quic"].is_string(), "{listening}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "shutting down"),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "TLS handshake failed"),
        "{stderr}"
    );
    // Events from the libraries, not only the binary's own.
    assert!(
        lines
            .iter()
            .any(|l| l["target"].as_str().is_some_and(|t| t != "chat")),
        "{stderr}"
    );
}

#[test]
fn bad_tls_flags_stop_the_start_with_a_clear_error() {
    let pki = Pki::new();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let (code, stderr) = run(&["--tls-cert", cert]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let missing = pki.path("missing.pem");
    let (code, stderr) = run(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--tls-cert {}: ", missing.display())),
        "{stderr}"
    );

    // A certificate where the key belongs.
    let (code, stderr) = run(&["--tls-cert", cert, "--tls-key", cert]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--tls-cert/--tls-key: "), "{stderr}");
}
