//! Every limit and timer of the protocol core, in one struct with documented defaults.

use std::time::Duration;

use crate::error::ConfigError;
use crate::extension::deflate::max_compressed_len;

/// Protocol limits and timers. Build one with [`Config::builder`]; [`Config::default`] is the
/// documented defaults.
///
/// A limit caps what a peer can make us hold in memory. Exceeding one fails the connection with
/// the close code named in its setter's docs, before anything over the limit is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    max_frame_size: usize,
    max_message_size: usize,
    max_fragments: usize,
    max_handshake_bytes: usize,
    max_headers: usize,
    close_timeout: Duration,
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    pong_backlog: usize,
    streaming: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_fragments: 1 << 17,
            max_handshake_bytes: 16 << 10,
            max_headers: 64,
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            pong_timeout: Duration::from_secs(20),
            pong_backlog: 64 << 10,
            streaming: false,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Self::default())
    }

    /// Largest frame payload accepted, in bytes. See [`ConfigBuilder::max_frame_size`].
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Largest payload accepted in a frame with RSV1 set, which permessage-deflate marks
    /// compressed, in bytes: the most deflate can make of `max_frame_size` bytes
    /// ([`max_compressed_len`]), so that compressing a message never gets its frame refused.
    ///
    /// Compression cannot shrink random bytes: without this allowance a receiver whose frame
    /// limit is its message limit would refuse with 1009 a message within both, sent
    /// compressed in one frame. Decompression stops at `max_message_size` all the same.
    pub fn max_compressed_frame_size(&self) -> usize {
        max_compressed_len(self.max_frame_size)
    }

    /// Largest message accepted, in bytes. See [`ConfigBuilder::max_message_size`].
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Most frames one message may be split into. See [`ConfigBuilder::max_fragments`].
    pub fn max_fragments(&self) -> usize {
        self.max_fragments
    }

    /// Largest opening handshake head, in bytes. See [`ConfigBuilder::max_handshake_bytes`].
    pub fn max_handshake_bytes(&self) -> usize {
        self.max_handshake_bytes
    }

    /// Most header fields in an opening handshake. See [`ConfigBuilder::max_headers`].
    pub fn max_headers(&self) -> usize {
        self.max_headers
    }

    /// How long to wait for the peer's side of the close handshake.
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Interval between keepalive pings, if any.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }

    /// How long after a keepalive ping the peer is declared dead.
    pub fn pong_timeout(&self) -> Duration {
        self.pong_timeout
    }

    /// Queued output above which Pings are answered with one Pong for the latest only.
    pub fn pong_backlog(&self) -> usize {
        self.pong_backlog
    }

    /// Whether data frames are delivered one by one instead of as whole messages.
    pub fn streaming(&self) -> bool {
        self.streaming
    }
}

/// Builds a [`Config`]; [`build`](Self::build) checks the values.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder(Config);

impl ConfigBuilder {
    /// Largest payload of one received frame, in bytes. Default 16 MiB.
    ///
    /// A header announcing more fails the connection with 1009 before any payload is buffered;
    /// this bounds the read buffer of a connection to about this size. A compressed frame
    /// (RSV1 under permessage-deflate) may be as long as deflate can make that much content:
    /// see [`Config::max_compressed_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.0.max_frame_size = bytes;
        self
    }

    /// Largest received message, in bytes, counted after any decompression. Default 64 MiB.
    ///
    /// Exceeding it fails the connection with 1009 as soon as the excess is announced (or
    /// inflated), so a message never holds more than this in memory. In
    /// [streaming](Self::streaming) mode, where nothing of a message is held, it bounds each
    /// frame's payload (after decompression) instead.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.0.max_message_size = bytes;
        self
    }

    /// Most frames one received message may be split into, empty frames included. Default
    /// 131,072 (enough for 4 MiB in 64-byte fragments).
    ///
    /// Bounds the work a peer can cause with a message of endless empty fragments. Exceeding it
    /// fails the connection with 1009.
    pub fn max_fragments(mut self, frames: usize) -> Self {
        self.0.max_fragments = frames;
        self
    }

    /// Largest opening handshake head (request or response line plus headers), in bytes.
    /// Default 16 KiB.
    ///
    /// A server answers a larger request with 431; a client refuses a larger response.
    pub fn max_handshake_bytes(mut self, bytes: usize) -> Self {
        self.0.max_handshake_bytes = bytes;
        self
    }

    /// Most header fields in an opening handshake. Default 64.
    ///
    /// A server answers a request with more with 431; a client refuses such a response.
    pub fn max_headers(mut self, headers: usize) -> Self {
        self.0.max_headers = headers;
        self
    }

    /// How long to wait for the peer's Close frame after sending ours, and (for a client) for
    /// the server to close the TCP connection after the close handshake. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.0.close_timeout = timeout;
        self
    }

    /// Send a keepalive Ping this often. Default: never.
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.0.ping_interval = interval;
        self
    }

    /// After a keepalive Ping, declare the peer dead if no frame arrives within this time; the
    /// connection then ends with [`ConnectionError::PongTimeout`](crate::ConnectionError).
    /// Default 20 s. Only in force with a ping interval.
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.0.pong_timeout = timeout;
        self
    }

    /// Bytes of queued, unsent output above which received Pings are no longer answered one by
    /// one: a single pending Pong carries the latest Ping's data instead (RFC 6455 section 5.5.3
    /// allows answering only the most recent). Default 64 KiB.
    ///
    /// This bounds what a peer that sends Pings and never reads can make us queue.
    pub fn pong_backlog(mut self, bytes: usize) -> Self {
        self.0.pong_backlog = bytes;
        self
    }

    /// Deliver each received data frame as [`Event::Frame`](crate::Event::Frame) instead of
    /// assembling whole messages, so large messages need not be buffered. Text is still checked
    /// for UTF-8 across frames. A message may then be larger than
    /// [`max_message_size`](Self::max_message_size), which bounds each frame instead;
    /// [`max_fragments`](Self::max_fragments) still bounds its frame count. Default: off.
    pub fn streaming(mut self, on: bool) -> Self {
        self.0.streaming = on;
        self
    }

    /// Checks and returns the configuration.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a size limit or timeout of zero, [`ConfigError::OutOfRange`] for a
    /// handshake head too small to hold a minimal request.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.0;
        for (value, field) in [
            (c.max_frame_size, "max_frame_size"),
            (c.max_message_size, "max_message_size"),
            (c.max_fragments, "max_fragments"),
            (c.max_headers, "max_headers"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if c.close_timeout.is_zero() {
            return Err(ConfigError::Zero {
                field: "close_timeout",
            });
        }
        if c.pong_timeout.is_zero() {
            return Err(ConfigError::Zero {
                field: "pong_timeout",
            });
        }
        if c.ping_interval.is_some_and(|i| i.is_zero()) {
            return Err(ConfigError::Zero {
                field: "ping_interval",
            });
        }
        // The shortest valid request head is well over 64 bytes.
        if c.max_handshake_bytes < 64 {
            return Err(ConfigError::OutOfRange {
                field: "max_handshake_bytes",
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        assert_eq!(Config::builder().build(), Ok(Config::default()));
    }

    #[test]
    fn zero_or_out_of_range_limits_are_errors() {
        assert_eq!(
            Config::builder().max_frame_size(0).build(),
            Err(ConfigError::Zero {
                field: "max_frame_size"
            })
        );
        assert_eq!(
            Config::builder()
                .ping_interval(Some(Duration::ZERO))
                .build(),
            Err(ConfigError::Zero {
                field: "ping_interval"
            })
        );
        assert_eq!(
            Config::builder().max_handshake_bytes(10).build(),
            Err(ConfigError::OutOfRange {
                field: "max_handshake_bytes"
            })
        );
    }

    #[test]
    fn setters_apply() {
        let c = Config::builder()
            .max_frame_size(10)
            .max_message_size(20)
            .streaming(true)
            .build()
            .unwrap();
        assert_eq!(c.max_frame_size(), 10);
        assert_eq!(c.max_message_size(), 20);
        assert!(c.streaming());
    }

    #[test]
    fn compressed_frames_may_hold_the_largest_frame_deflated() {
        let c = Config::builder()
            .max_frame_size(1000)
            .max_message_size(4000)
            .build()
            .unwrap();
        assert_eq!(c.max_compressed_frame_size(), 1000 + 125 + 64);
        let c = Config::builder()
            .max_frame_size(usize::MAX)
            .build()
            .unwrap();
        assert_eq!(c.max_compressed_frame_size(), usize::MAX);
    }
}
