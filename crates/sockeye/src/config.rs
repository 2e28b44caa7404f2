//! The I/O settings of a connection, around the protocol core's [`Config`].

use std::time::Duration;

use sockeye_proto::{Config, ConfigError};

/// Settings of a WebSocket connection: the protocol limits and timers of [`Config`] plus the I/O
/// knobs of this crate. Build with [`WebSocketConfig::builder`].
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    pub(crate) proto: Config,
    pub(crate) write_buffer_high_water: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) nodelay: bool,
    /// The server's drain handle, set by [`ServerBuilder::shutdown`](crate::ServerBuilder::shutdown).
    pub(crate) shutdown: Option<crate::Shutdown>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            proto: Config::default(),
            write_buffer_high_water: 1 << 20,
            read_buffer_size: 1 << 10,
            handshake_timeout: Duration::from_secs(10),
            nodelay: true,
            shutdown: None,
        }
    }
}

impl WebSocketConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> WebSocketConfigBuilder {
        WebSocketConfigBuilder(Self::default())
    }

    /// The protocol limits and timers.
    pub fn proto(&self) -> &Config {
        &self.proto
    }

    /// Queued output above which sending waits. See [`WebSocketConfigBuilder::write_buffer_high_water`].
    pub fn write_buffer_high_water(&self) -> usize {
        self.write_buffer_high_water
    }

    /// Time allowed for the opening handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// Builds a [`WebSocketConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct WebSocketConfigBuilder(WebSocketConfig);

impl WebSocketConfigBuilder {
    /// The protocol limits and timers (frame and message sizes, close timeout, keepalive).
    /// With its `streaming` on, messages are read frame by frame
    /// ([`WebSocket::next_frame`](crate::WebSocket::next_frame)).
    pub fn proto(mut self, config: Config) -> Self {
        self.0.proto = config;
        self
    }

    /// Bytes of unsent output above which `send` (through `Sink::poll_ready`) waits for the
    /// transport, and reading pauses, so that a peer that does not read cannot make us queue
    /// without bound. Default 1 MiB. One message may overshoot it: a message is queued whole.
    pub fn write_buffer_high_water(mut self, bytes: usize) -> Self {
        self.0.write_buffer_high_water = bytes;
        self
    }

    /// Initial size of a read, in bytes. Default 1 KiB. Reads that fill the buffer double the
    /// next read's size, up to 64 KiB, so a busy connection reads in large chunks; the buffer
    /// also grows to hold the frame being read (up to the frame limit) and is reused while
    /// data keeps coming. An idle connection holds no read buffer: it is released when a read
    /// finds nothing with the buffer empty, and the next read goes to the stack (up to 4 KiB)
    /// and allocates only for what arrived (see `docs/topics/memory.md`).
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.0.read_buffer_size = bytes;
        self
    }

    /// Time allowed for the opening handshake, from the first byte sent or received. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.0.handshake_timeout = timeout;
        self
    }

    /// Set `TCP_NODELAY` on TCP connections the library opens or accepts. Default on: WebSocket
    /// messages are latency-sensitive and the library batches its own writes.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.0.nodelay = on;
        self
    }

    /// Checks and returns the configuration.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a zero buffer size or timeout.
    pub fn build(self) -> Result<WebSocketConfig, ConfigError> {
        let c = self.0;
        if c.write_buffer_high_water == 0 {
            return Err(ConfigError::Zero {
                field: "write_buffer_high_water",
            });
        }
        if c.read_buffer_size == 0 {
            return Err(ConfigError::Zero {
                field: "read_buffer_size",
            });
        }
        if c.handshake_timeout.is_zero() {
            return Err(ConfigError::Zero {
                field: "handshake_timeout",
            });
        }
        Ok(c)
    }
}
