//! TypeScript declarations of the chat's messages (docs/PROTOCOL.md §9) for
//! the TypeScript client (clients/typescript), generated from the Rust
//! structs above with `ts-rs` and checked in as
//! clients/typescript/src/generated/chat.ts.
//!
//! The test fails when the checked-in file differs from what the structs
//! generate, so a payload change on the Rust side that the TypeScript side
//! has not taken fails `cargo test`. To regenerate the file:
//!
//! ```text
//! SIGNALBOX_WRITE_TS=1 cargo test -p signalbox-examples --lib chat::typescript
//! ```

use super::{
    Echo, JoinRoom, LeaveRoom, Member, NewMessage, RoomMembers, SendMessage, UserJoined, UserLeft,
};
use signalbox::Message;
use std::fmt::Write;
use std::path::PathBuf;
use ts_rs::{Config, TS};

/// The checked-in file, relative to the repository root.
const FILE: &str = "clients/typescript/src/generated/chat.ts";

/// 64-bit integers (the timestamps) are declared `number`: JSON and the
/// MessagePack decoder give numbers, exact up to 2^53.
fn config() -> Config {
    Config::new().with_large_int("number")
}

/// One message type: its wire name and its payload's TypeScript type.
struct Entry {
    wire: &'static str,
    payload: String,
}

fn entry<M: Message + TS>() -> Entry {
    Entry {
        wire: M::TYPE,
        payload: M::name(&config()),
    }
}

/// `ECHO` takes and returns any payload.
fn echo() -> Entry {
    Entry {
        wire: Echo::TYPE,
        payload: "unknown".to_owned(),
    }
}

/// A type `ts-rs` declares, with its doc comment.
fn declare<T: TS>(out: &mut String) {
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    let _ = writeln!(out, "export {}\n", T::decl(&config()));
}

fn map(out: &mut String, docs: &str, name: &str, entries: &[Entry]) {
    let _ = writeln!(out, "/** {docs} */\nexport type {name} = {{");
    for e in entries {
        let _ = writeln!(out, "  {:?}: {};", e.wire, e.payload);
    }
    out.push_str("};\n\n");
}

/// The whole file.
fn generate() -> String {
    let mut out = String::from(
        "// Generated from the chat's Rust messages (examples/src/chat.rs) by\n\
         // examples/src/chat/typescript.rs: do not edit. After changing a message,\n\
         // regenerate with\n\
         // SIGNALBOX_WRITE_TS=1 cargo test -p signalbox-examples --lib chat::typescript\n\n",
    );
    declare::<JoinRoom>(&mut out);
    declare::<UserJoined>(&mut out);
    declare::<SendMessage>(&mut out);
    declare::<NewMessage>(&mut out);
    declare::<LeaveRoom>(&mut out);
    declare::<UserLeft>(&mut out);
    declare::<Member>(&mut out);
    declare::<RoomMembers>(&mut out);
    map(
        &mut out,
        "What a client sends, by message type (docs/PROTOCOL.md §9).",
        "ChatSend",
        &[
            entry::<JoinRoom>(),
            entry::<SendMessage>(),
            entry::<LeaveRoom>(),
            echo(),
        ],
    );
    map(
        &mut out,
        "What the chat sends a client, by message type (docs/PROTOCOL.md §9).",
        "ChatReceive",
        &[
            entry::<UserJoined>(),
            entry::<NewMessage>(),
            entry::<UserLeft>(),
            entry::<RoomMembers>(),
            echo(),
        ],
    );
    let requests = [(Echo::TYPE, Echo::TYPE)];
    out.push_str(
        "/** Requests (rpc routes), each with the type of its reply. */\nexport type ChatRequests = {\n",
    );
    for (request, reply) in requests {
        let _ = writeln!(out, "  {request:?}: {reply:?};");
    }
    out.push_str(
        "};\n\n/** The reply type of each request at run time (`ClientOptions.replyTypes`). */\n\
         export const chatReplyTypes: ChatRequests = {\n",
    );
    for (request, reply) in requests {
        let _ = writeln!(out, "  {request:?}: {reply:?},");
    }
    out.push_str("};\n\n");
    out.push_str(
        "/** The chat's message map, for `Client<ChatMessages>`. */\n\
         export type ChatMessages = {\n  send: ChatSend;\n  receive: ChatReceive;\n  requests: ChatRequests;\n};\n",
    );
    out
}

#[test]
fn the_checked_in_typescript_declarations_match_the_rust_messages() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(FILE);
    let generated = generate();
    if std::env::var_os("SIGNALBOX_WRITE_TS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{FILE}: {e}; generate it with SIGNALBOX_WRITE_TS=1"));
    assert!(
        checked_in == generated,
        "{FILE} differs from what the Rust messages generate: regenerate it with\n\
         SIGNALBOX_WRITE_TS=1 cargo test -p signalbox-examples --lib chat::typescript\n\
         and update the TypeScript client's uses of what changed.\n--- generated ---\n{generated}"
    );
}
