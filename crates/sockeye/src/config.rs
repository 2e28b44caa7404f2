//! The I/O settings of a connection, around the protocol core's [`Config`].

use std::time::Duration;

use sockeye_proto::{Config, ConfigError};

/// How long a connection with nothing to read keeps its read buffer and output queues by
/// default ([`WebSocketConfigBuilder::release_idle_buffers_after`]).
const DEFAULT_RELEASE_IDLE_BUFFERS_AFTER: Duration = Duration::from_secs(1);

/// Settings of a WebSocket connection: the protocol limits and timers of [`Config`] plus the I/O
/// knobs of this crate. Build with [`WebSocketConfig::builder`].
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    pub(crate) proto: Config,
    pub(crate) write_buffer_high_water: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) nodelay: bool,
    pub(crate) release_idle_buffers_after: Duration,
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
            release_idle_buffers_after: DEFAULT_RELEASE_IDLE_BUFFERS_AFTER,
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

    /// How long an idle connection keeps its buffers. See
    /// [`WebSocketConfigBuilder::release_idle_buffers_after`].
    pub fn release_idle_buffers_after(&self) -> Duration {
        self.release_idle_buffers_after
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
    /// data keeps coming. An idle connection holds no read buffer: it is released once the
    /// connection has had nothing to read for
    /// [`release_idle_buffers_after`](Self::release_idle_buffers_after), and the next read goes
    /// to the stack (up to 4 KiB) and allocates only for what arrived (see
    /// `docs/topics/memory.md`).
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.0.read_buffer_size = bytes;
        self
    }

    /// How long a connection that has nothing to read (no data for this long, nothing buffered)
    /// keeps its read buffer and empty output queues before releasing them. Default 1 s. A busy connection reuses its buffers from one
    /// message to the next; an idle one then holds no buffer, only its state (about 2 KiB in
    /// all). Zero releases them at every read that finds nothing, the least memory for the most
    /// allocations: with one message at a time in flight, every message then allocates its
    /// buffers again. The timer is armed once per idle period, and wakes the connection's task
    /// once when it fires.
    pub fn release_idle_buffers_after(mut self, after: Duration) -> Self {
        self.0.release_idle_buffers_after = after;
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
