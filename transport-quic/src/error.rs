//! The crate's errors.

/// Why a QUIC server or client could not be set up or connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// A certificate or key could not be made, read or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The TLS configuration was refused (rustls).
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The server's certificate could not be read, made or written.
    #[error(transparent)]
    Identity(#[from] signalbox::transport::IdentityError),
    /// The address to bind could not be resolved.
    #[error("resolve: {0}")]
    Resolve(#[source] std::io::Error),
    /// The UDP socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// The client could not start a connection.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("write: {0}")]
    Write(StreamError),
    /// Reading from a stream failed.
    #[error("read: {0}")]
    Read(StreamError),
    /// The WebTransport session could not be set up (the HTTP/3 exchange
    /// failed, or the server answered the CONNECT with an error status).
    #[error("webtransport: {0}")]
    WebTransport(#[from] web_transport_quinn::ClientError),
    /// The peer broke the framing rules.
    #[error("framing: {0}")]
    Frame(#[from] crate::framing::FrameError),
    /// A stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
}

/// Why a stream (native or WebTransport) could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection or session is gone, or the peer reset or stopped
    /// the stream: nobody is there to read or write any more.
    #[error("closed: {0}")]
    Closed(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
