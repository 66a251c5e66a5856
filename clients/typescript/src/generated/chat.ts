// Generated from the chat's Rust messages (examples/src/chat.rs) by
// examples/src/chat/typescript.rs: do not edit. After changing a message,
// regenerate with
// SIGNALBOX_WRITE_TS=1 cargo test -p signalbox-examples --lib chat::typescript

/**
 * `JOIN_ROOM`: become a member of a room (a no-op for a member).
 */
export type JoinRoom = { 
/**
 * The room.
 */
roomId: string, 
/**
 * A display name, passed on as given.
 */
username?: string | null, };

/**
 * `USER_JOINED`: someone (perhaps the receiver) joined a room.
 */
export type UserJoined = { 
/**
 * The room.
 */
roomId: string, 
/**
 * The joiner's connection id.
 */
userId: string, 
/**
 * The joiner's display name, if given.
 */
username?: string | null, };

/**
 * `SEND_MESSAGE`: say something in a room the sender is a member of.
 */
export type SendMessage = { 
/**
 * The room.
 */
roomId: string, 
/**
 * The text, 1..=4096 Unicode scalar values.
 */
text: string, };

/**
 * `NEW_MESSAGE`: a message said in a room, to every member.
 */
export type NewMessage = { 
/**
 * The room.
 */
roomId: string, 
/**
 * The sender's connection id (also in `meta.clientId`).
 */
userId: string, 
/**
 * The text.
 */
text: string, 
/**
 * When the server relayed it, ms since the Unix epoch.
 */
timestamp: number, };

/**
 * `LEAVE_ROOM`: stop being a member (a no-op for a non-member).
 */
export type LeaveRoom = { 
/**
 * The room.
 */
roomId: string, };

/**
 * `USER_LEFT`: someone left a room, or disconnected.
 */
export type UserLeft = { 
/**
 * The room.
 */
roomId: string, 
/**
 * The leaver's connection id.
 */
userId: string, };

/**
 * One member of a room, as [`RoomMembers`] lists it.
 */
export type Member = { 
/**
 * The member's connection id.
 */
userId: string, 
/**
 * The member's display name, if given.
 */
username?: string | null, };

/**
 * `ROOM_MEMBERS`: who is in a room (on every node), sent to a joiner.
 */
export type RoomMembers = { 
/**
 * The room.
 */
roomId: string, 
/**
 * Its members, the joiner included.
 */
members: Array<Member>, };

/** What a client sends, by message type (docs/PROTOCOL.md §9). */
export type ChatSend = {
  "JOIN_ROOM": JoinRoom;
  "SEND_MESSAGE": SendMessage;
  "LEAVE_ROOM": LeaveRoom;
  "ECHO": unknown;
};

/** What the chat sends a client, by message type (docs/PROTOCOL.md §9). */
export type ChatReceive = {
  "USER_JOINED": UserJoined;
  "NEW_MESSAGE": NewMessage;
  "USER_LEFT": UserLeft;
  "ROOM_MEMBERS": RoomMembers;
  "ECHO": unknown;
};

/** Requests (rpc routes), each with the type of its reply. */
export type ChatRequests = {
  "ECHO": "ECHO";
};

/** The reply type of each request at run time (`ClientOptions.replyTypes`). */
export const chatReplyTypes: ChatRequests = {
  "ECHO": "ECHO",
};

/** The chat's message map, for `Client<ChatMessages>`. */
export type ChatMessages = {
  send: ChatSend;
  receive: ChatReceive;
  requests: ChatRequests;
};
