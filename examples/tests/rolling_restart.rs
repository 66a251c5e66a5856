//! A zero-loss rolling restart through a real HAProxy (docs/DEPLOYMENT.md,
//! "Rolling restarts"): `scripts/cluster` starts Redis, three chat nodes
//! and HAProxy; 100 Rust clients (`signalbox::client`, with resume) chat in
//! four rooms through the balancer while `scripts/cluster restart` drains
//! and restarts each node in turn. Every publication of a room (its
//! positions come from Redis, so the room's top offset counts them all) is
//! delivered exactly once and in order to every member; every message a
//! client said arrives, once, in the order it was said; clients see nothing
//! but reconnects (no error, no "not recovered", every close a 1001).
//!
//! Needs haproxy and redis-server (scripts/setup installs them): without
//! them the cluster does not start and the test fails.

mod common;

use signalbox::client::{Client, ConnectionState, Recovery};
use signalbox::codec::Meta;
use signalbox::codec::vocab::{META_EPOCH, META_OFFSET, META_TOPIC};
use signalbox_examples::chat::{
    JoinRoom, NewMessage, SendMessage, UserJoined, UserLeft, room_topic,
};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 100;
const ROOMS: usize = 4;
/// Each client says something this often (100 clients: 200 messages/s,
/// 5,000 deliveries/s).
const SAY_EVERY: Duration = Duration::from_millis(500);
/// A client whose message has not come back this long after it reconnected
/// says it again: it was written just as its connection closed and never
/// reached a handler (a fire-and-forget send is at most once).
const RESEND_AFTER_RECONNECT: Duration = Duration::from_secs(3);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster")
}

/// `scripts/cluster` running in the background; stopped (SIGTERM: it stops
/// everything it started) on drop.
struct Cluster {
    child: Child,
    dir: PathBuf,
    balancer: SocketAddr,
    redis: String,
}

impl Cluster {
    fn command(dir: &std::path::Path, what: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(script())
            .arg(what)
            .env("CHAT_BIN", env!("CARGO_BIN_EXE_chat"))
            .env("CLUSTER_DIR", dir)
            .env("CLUSTER_PORTS", "free")
            .stdin(Stdio::null());
        command
    }

    /// Starts it; returns once it printed that it is ready.
    fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("signalbox-rolling-{}", std::process::id()));
        let mut child = Cluster::command(&dir, "start")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs scripts/cluster");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = child.stderr.take().expect("stderr");
        // The script's complaints (haproxy missing...) go to the test output.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        let mut lines = stdout.lines();
        let (mut balancer, mut redis) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("a line");
            eprintln!("{line}");
            let mut words = line.split_whitespace().skip(1);
            match (words.next(), words.next()) {
                (Some("balancer"), Some(url)) => {
                    balancer = url
                        .strip_prefix("ws://")
                        .and_then(|a| a.strip_suffix("/ws"))
                        .and_then(|a| a.parse().ok());
                }
                (Some("redis"), Some(url)) => redis = Some(url.to_owned()),
                (Some("ready;"), _) => break,
                _ => {}
            }
        }
        // Keeps reading, so that the script never writes to a closed pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        let mut cluster = Cluster {
            child,
            dir,
            balancer: "127.0.0.1:1".parse().expect("an address"),
            redis: String::new(),
        };
        match (balancer, redis) {
            (Some(balancer), Some(redis)) => {
                cluster.balancer = balancer;
                cluster.redis = redis;
                cluster
            }
            _ => panic!(
                "scripts/cluster did not start (exit {:?}; is haproxy installed? scripts/setup installs it)",
                cluster.child.wait()
            ),
        }
    }

    /// Runs `scripts/cluster restart`; its output.
    fn rolling_restart(&self) -> String {
        let output = Cluster::command(&self.dir, "restart")
            .output()
            .expect("bash runs scripts/cluster restart");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "scripts/cluster restart failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one member saw.
#[derive(Default)]
struct Seen {
    /// The offsets of every publication of its room, as they came.
    offsets: Vec<u64>,
    /// The epochs they came with.
    epochs: Vec<String>,
    /// The texts of the room's NEW_MESSAGEs, as they came.
    texts: Vec<String>,
    /// The same, to look up.
    text_set: HashSet<String>,
    /// Connections made (the first and every reconnect).
    connects: u64,
    /// When the last reconnect happened.
    reconnected_at: Option<Instant>,
    /// ERRORs the server sent.
    errors: Vec<String>,
    /// Close codes of the connections the server closed (as far as the
    /// state watch saw them).
    closes: Vec<Option<u16>>,
    /// Resumes that were not recovered.
    not_recovered: Vec<Recovery>,
}

impl Seen {
    fn note(&mut self, topic: &str, meta: &Meta) {
        if meta.extra.get(META_TOPIC).and_then(|t| t.as_str()) != Some(topic) {
            return;
        }
        if let Some(offset) = meta.extra.get(META_OFFSET).and_then(|o| o.as_u64()) {
            self.offsets.push(offset);
        }
        if let Some(epoch) = meta.extra.get(META_EPOCH).and_then(|e| e.as_str())
            && self.epochs.last().map(String::as_str) != Some(epoch)
        {
            self.epochs.push(epoch.to_owned());
        }
    }
}

struct Member {
    client: Client,
    name: String,
    room: String,
    seen: Arc<Mutex<Seen>>,
}

async fn member(balancer: SocketAddr, n: usize) -> Member {
    let room = format!("r{}", n % ROOMS);
    let topic = room_topic(&room);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let connector = signalbox_ws::WsConnector::new(&format!("ws://{balancer}/ws"), "msgpack")
        .expect("a connector");
    let on_topic = |seen: &Arc<Mutex<Seen>>, topic: &str| {
        let (seen, topic) = (seen.clone(), topic.to_owned());
        move |meta: &Meta| seen.lock().expect("seen").note(&topic, meta)
    };
    let joined = on_topic(&seen, &topic);
    let left = on_topic(&seen, &topic);
    let said = on_topic(&seen, &topic);
    let client = Client::builder(connector)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .on(move |_: UserJoined, meta| joined(&meta))
        .on(move |_: UserLeft, meta| left(&meta))
        .on({
            let seen = seen.clone();
            move |m: NewMessage, meta| {
                said(&meta);
                let mut seen = seen.lock().expect("seen");
                seen.text_set.insert(m.text.clone());
                seen.texts.push(m.text);
            }
        })
        .on_error({
            let seen = seen.clone();
            move |error, _| seen.lock().expect("seen").errors.push(error.to_string())
        })
        .on_connected({
            let seen = seen.clone();
            move |_| {
                let mut seen = seen.lock().expect("seen");
                seen.connects += 1;
                if seen.connects > 1 {
                    seen.reconnected_at = Some(Instant::now());
                }
            }
        })
        .build();
    let mut state = client.state();
    tokio::spawn({
        let seen = seen.clone();
        async move {
            // A watch may skip states: a loss shows as Disconnected or as
            // the first Reconnecting after it, both with the close; one
            // record per connection lost.
            let mut recorded_for = 0;
            while state.changed().await.is_ok() {
                let closed = match &*state.borrow_and_update() {
                    ConnectionState::Disconnected { close, .. }
                    | ConnectionState::Reconnecting {
                        attempt: 1, close, ..
                    } => Some(close.as_ref().map(|c| c.code)),
                    ConnectionState::Closed => break,
                    _ => None,
                };
                if let Some(code) = closed {
                    let mut seen = seen.lock().expect("seen");
                    if seen.connects > recorded_for {
                        recorded_for = seen.connects;
                        seen.closes.push(code);
                    }
                }
            }
        }
    });
    let mut recoveries = client.recoveries();
    tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok(recovery) = recoveries.recv().await {
                if !recovery.recovered {
                    seen.lock().expect("seen").not_recovered.push(recovery);
                }
            }
        }
    });
    assert!(
        client.wait_connected(Duration::from_secs(10)).await,
        "client {n} connected through the balancer"
    );
    client
        .send(&JoinRoom {
            room_id: room.clone(),
            username: Some(format!("c{n}")),
        })
        .await
        .expect("JOIN_ROOM sent");
    common::wait_until("subscribed", Duration::from_secs(10), || {
        client.positions().iter().any(|(t, _)| *t == topic)
    })
    .await;
    Member {
        client,
        name: format!("c{n}"),
        room,
        seen,
    }
}

/// What a client said.
#[derive(Debug, Default, Clone, Copy)]
struct Said {
    /// Messages said (each once, with its number).
    messages: u64,
    /// Messages said again after a reconnect because they never came back.
    resent: u64,
}

/// Says `c{n}-{i}` for i = 1, 2, ... until `stop`, each after the previous
/// one came back.
async fn chat(member: Arc<Member>, stop: Arc<AtomicBool>, first_delay: Duration) -> Said {
    let mut said = Said::default();
    tokio::time::sleep(first_delay).await;
    while !stop.load(Ordering::Relaxed) {
        said.messages += 1;
        let text = format!("{}-{}", member.name, said.messages);
        let message = SendMessage {
            room_id: member.room.clone(),
            text: text.clone(),
        };
        member
            .client
            .send(&message)
            .await
            .expect("SEND_MESSAGE sent or queued");
        let mut connects = member.seen.lock().expect("seen").connects;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (back, now_connects, reconnected_at) = {
                let seen = member.seen.lock().expect("seen");
                (
                    seen.text_set.contains(&text),
                    seen.connects,
                    seen.reconnected_at,
                )
            };
            if back {
                break;
            }
            assert!(Instant::now() < deadline, "{text} never came back");
            let resend = now_connects != connects
                && reconnected_at.is_some_and(|at| at.elapsed() >= RESEND_AFTER_RECONNECT);
            if resend {
                connects = now_connects;
                said.resent += 1;
                member.client.send(&message).await.expect("resent");
            }
        }
        tokio::time::sleep(SAY_EVERY).await;
    }
    said
}

/// The room's epoch and top offset, as Redis holds them.
async fn room_position(redis: &str, room: &str) -> (String, u64) {
    let client = redis::Client::open(redis).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let key = format!("signalbox:position:{}", room_topic(room));
    let (epoch, top): (String, u64) = redis::cmd("HMGET")
        .arg(&key)
        .arg("epoch")
        .arg("top")
        .query_async(&mut conn)
        .await
        .expect("the room's position");
    (epoch, top)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_loses_nothing_and_clients_only_reconnect() {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("started");
    let mut members = Vec::with_capacity(CLIENTS);
    for batch in (0..CLIENTS).collect::<Vec<_>>().chunks(10) {
        let joined =
            futures_util::future::join_all(batch.iter().map(|&n| member(cluster.balancer, n)))
                .await;
        members.extend(joined.into_iter().map(Arc::new));
    }

    // Everyone chats; the nodes are restarted one after the other meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let chatting: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let first =
                SAY_EVERY * u32::try_from(i).expect("few") / u32::try_from(CLIENTS).expect("few");
            tokio::spawn(chat(m.clone(), stop.clone(), first))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let restart = {
        let cluster = &cluster;
        tokio::task::block_in_place(|| cluster.rolling_restart())
    };
    let restart_took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut said = Said::default();
    let mut said_by = HashMap::new();
    for (member, task) in members.iter().zip(chatting) {
        let s = task.await.expect("a chatting client");
        said.messages += s.messages;
        said.resent += s.resent;
        said_by.insert(member.name.clone(), s.messages);
    }

    // Every member has everything its room's history counts.
    let mut tops = HashMap::new();
    for r in 0..ROOMS {
        let room = format!("r{r}");
        tops.insert(room.clone(), room_position(&cluster.redis, &room).await);
    }
    common::wait_until(
        "every member has its room's every publication",
        Duration::from_secs(30),
        || {
            members.iter().all(|m| {
                let top = tops[&m.room].1;
                m.seen.lock().expect("seen").offsets.last() == Some(&top)
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut deliveries, mut reconnects, mut closes) =
        (0u64, 0u64, HashMap::<Option<u16>, u64>::new());
    let mut texts_of_room: HashMap<String, Vec<String>> = HashMap::new();
    for m in &members {
        let seen = m.seen.lock().expect("seen");
        let (epoch, top) = &tops[&m.room];
        common::assert_exactly_once_in_order(&seen.offsets, *top);
        assert_eq!(seen.epochs, [epoch.as_str()], "{}: one epoch", m.name);
        assert!(
            seen.errors.is_empty(),
            "{}: errors {:?}",
            m.name,
            seen.errors
        );
        assert!(
            seen.not_recovered.is_empty(),
            "{}: {:?}",
            m.name,
            seen.not_recovered
        );
        assert!(seen.connects >= 2, "{}: never moved by the restart", m.name);
        deliveries += seen.offsets.len() as u64;
        reconnects += seen.connects - 1;
        for code in &seen.closes {
            *closes.entry(*code).or_default() += 1;
        }
        // Every member of a room saw the same conversation.
        match texts_of_room.get(&m.room) {
            Some(texts) => assert!(*texts == seen.texts, "{}: another conversation", m.name),
            None => {
                texts_of_room.insert(m.room.clone(), seen.texts.clone());
            }
        }
    }
    assert!(
        !closes.is_empty() && closes.keys().all(|code| *code == Some(1001)),
        "connections ended otherwise than with 1001: {closes:?}"
    );
    // Every client's messages arrived in its room once each, in the order
    // said, none missing.
    let mut published_messages = 0;
    for (room, texts) in &texts_of_room {
        published_messages += texts.len() as u64;
        let mut next: HashMap<&str, u64> = HashMap::new();
        for text in texts {
            let (name, i) = text.rsplit_once('-').expect("name-number");
            let i: u64 = i.parse().expect("a number");
            let expected = next.entry(name).or_insert(1);
            assert_eq!(
                i, *expected,
                "{room}: {text} out of order, lost before, or twice"
            );
            *expected += 1;
        }
        for m in members.iter().filter(|m| m.room == *room) {
            assert_eq!(
                next.get(m.name.as_str()).copied().unwrap_or(1) - 1,
                said_by[&m.name],
                "{}: said messages missing",
                m.name
            );
        }
    }
    let publications: u64 = tops.values().map(|(_, top)| top).sum();
    println!(
        "rolling restart: {CLIENTS} clients in {ROOMS} rooms; {} messages said, {published_messages} \
         published ({publications} publications with joins and leaves), {deliveries} deliveries, \
         each exactly once and in order; {reconnects} reconnects (closes seen: {closes:?}); \
         {} messages resent after a reconnect; restart of 3 nodes took {:.1} s\n{restart}",
        said.messages,
        said.resent,
        restart_took.as_secs_f64()
    );
    for m in &members {
        m.client.close().await;
    }
    drop(cluster);
}
