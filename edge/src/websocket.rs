//! The WebSocket tunnel after a 101: bytes pass both ways unchanged (frames never reach the
//! filters, as in nginx), but the edge reads the header of every frame the client sends and
//! closes the connection with 1009 (Message Too Big) when a frame, or a message made of
//! fragments, is larger than its limit. It does not unmask or look at payloads.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame and the largest message (all fragments) a client may send.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_frame: u64,
    pub max_message: u64,
}

/// RFC 6455 §7.4.1: the message is too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;

#[derive(Debug)]
enum State {
    /// Collecting a frame header (2 to 14 bytes).
    Header { buf: [u8; 14], have: usize },
    /// This many payload bytes left.
    Payload(u64),
}

/// Follows the client's frames header by header.
#[derive(Debug)]
pub struct Frames {
    limits: FrameLimits,
    state: State,
    /// Bytes of the data message being fragmented so far.
    message: u64,
}

impl Frames {
    pub fn new(limits: FrameLimits) -> Self {
        Self {
            limits,
            state: State::Header {
                buf: [0; 14],
                have: 0,
            },
            message: 0,
        }
    }

    /// Checks the next bytes from the client; `Err` is the close code to send.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Result<(), u16> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Header { buf, have } => {
                    buf[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have < 2 {
                        continue;
                    }
                    let masked = buf[1] & 0x80 != 0;
                    let extended = match buf[1] & 0x7F {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let needed = 2 + extended + if masked { 4 } else { 0 };
                    if *have < needed {
                        continue;
                    }
                    let len = match extended {
                        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                        8 => u64::from_be_bytes([
                            buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
                        ]),
                        _ => u64::from(buf[1] & 0x7F),
                    };
                    let fin = buf[0] & 0x80 != 0;
                    let control = buf[0] & 0x08 != 0;
                    if len > self.limits.max_frame {
                        return Err(MESSAGE_TOO_BIG);
                    }
                    if !control {
                        self.message = self.message.saturating_add(len);
                        if self.message > self.limits.max_message {
                            return Err(MESSAGE_TOO_BIG);
                        }
                        if fin {
                            self.message = 0;
                        }
                    }
                    self.state = if len == 0 {
                        State::Header {
                            buf: [0; 14],
                            have: 0,
                        }
                    } else {
                        State::Payload(len)
                    };
                }
            }
        }
        Ok(())
    }
}

/// Copies the client's bytes to the upstream through `Frames`; `Some(code)` when a limit was
/// broken (nothing of that frame is passed on).
async fn client_to_upstream<R, W>(
    client: &mut R,
    upstream: &mut W,
    limits: FrameLimits,
) -> Option<u16>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Frames::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        if let Err(code) = frames.scan(&buf[..n]) {
            return Some(code);
        }
        if upstream.write_all(&buf[..n]).await.is_err() {
            return None;
        }
    }
}

/// The tunnel between an upgraded client and upstream connection, until either side ends it.
pub async fn tunnel<C, U>(client: C, upstream: U, limits: FrameLimits)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
    enum End {
        Upstream,
        Client(Option<u16>),
    }
    let end = tokio::select! {
        _ = tokio::io::copy(&mut upstream_r, &mut client_w) => End::Upstream,
        code = client_to_upstream(&mut client_r, &mut upstream_w, limits) => End::Client(code),
    };
    let linger = Duration::from_secs(5);
    match end {
        End::Client(Some(code)) => {
            tracing::debug!(code, "WebSocket frame over the limit: closing");
            let [hi, lo] = code.to_be_bytes();
            // A server's Close frame: FIN + opcode 8, unmasked, two bytes of status code.
            let _ = tokio::time::timeout(linger, async {
                let _ = client_w.write_all(&[0x88, 2, hi, lo]).await;
                let _ = client_w.shutdown().await;
            })
            .await;
            let _ = upstream_w.shutdown().await;
        }
        End::Client(None) => {
            // The client is done sending: let the upstream finish (its Close frame).
            let _ = upstream_w.shutdown().await;
            let _ =
                tokio::time::timeout(linger, tokio::io::copy(&mut upstream_r, &mut client_w)).await;
        }
        End::Upstream => {
            let _ = client_w.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => f.push(0x80 | u8::try_from(len).expect("small")),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&u16::try_from(len).expect("u16").to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0u8, len));
        f
    }

    #[test]
    fn frames_and_messages_over_the_limits_close_with_1009() {
        let limits = FrameLimits {
            max_frame: 1000,
            max_message: 2500,
        };
        let mut ok = Frames::new(limits);
        let mut bytes = frame(true, 1, 10);
        bytes.extend(frame(true, 2, 1000));
        bytes.extend(frame(true, 9, 4)); // a ping
        // Two fragments and a ping between them, 2000 bytes in all.
        bytes.extend(frame(false, 2, 1000));
        bytes.extend(frame(true, 10, 0));
        bytes.extend(frame(true, 0, 1000));
        // Byte by byte, as a slow client sends them.
        for b in &bytes {
            assert_eq!(ok.scan(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(Frames::new(limits).scan(&frame(true, 2, 1001)), Err(1009));
        assert_eq!(
            Frames::new(limits).scan(&frame(true, 2, 70_000)[..14]),
            Err(1009)
        );
        let mut fragmented = Frames::new(limits);
        let mut bytes = frame(false, 2, 1000);
        bytes.extend(frame(false, 0, 1000));
        bytes.extend(frame(true, 0, 1000));
        assert_eq!(fragmented.scan(&bytes), Err(1009));
    }
}
