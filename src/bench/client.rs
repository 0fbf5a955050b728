//! The load generator's HTTP/1.1 client: one keep-alive connection, one request at a time.
//!
//! Why not a general client: the generator shares the machine's cores with the daemon it
//! measures, so every microsecond it spends is taken from the daemon. A general client (pools,
//! header maps, redirects, decompression) costs several times more per request than writing a
//! prepared request and reading back a `Content-Length` body, and the figures would describe
//! the generator rather than Tally. Setup and verification calls still use a full client.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted, in bytes: a bound, not a tuning knob.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body accepted, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A keep-alive connection to one daemon.
pub struct Connection {
    stream: TcpStream,
    host: String,
    authorization: String,
    buffer: Vec<u8>,
}

/// A response: status and body.
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Connection {
    /// Connects to `base` (`http://host:port`), sending `key` as the bearer token.
    pub async fn open(base: &str, key: &str) -> anyhow::Result<Self> {
        let host = base
            .strip_prefix("http://")
            .context("the load generator speaks plain http:// only")?
            .trim_end_matches('/')
            .to_string();
        let stream = TcpStream::connect(&host)
            .await
            .with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host,
            authorization: format!("Bearer {key}"),
            buffer: Vec::with_capacity(8 * 1024),
        })
    }

    /// Sends one request and reads its whole response.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<Reply> {
        let mut request = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n",
                self.host, self.authorization
            )
            .as_bytes(),
        );
        if let Some(key) = idempotency_key {
            request.extend_from_slice(format!("Idempotency-Key: {key}\r\n").as_bytes());
        }
        if let Some(body) = body {
            request.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            request.extend_from_slice(body);
        } else {
            request.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&request).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        // Read until the end of the head.
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if self.buffer.len() > MAX_HEAD_BYTES {
                bail!("response head larger than {MAX_HEAD_BYTES} bytes");
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("non-UTF-8 head")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .context("malformed status line")?;
        let mut length = None;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by the load generator");
                }
            }
        }
        let length = length.context("response without Content-Length")?;
        if length > MAX_BODY_BYTES {
            bail!("response body larger than {MAX_BODY_BYTES} bytes");
        }
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Ok(Reply { status, body })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the daemon closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How many times `needle` occurs in `haystack` (results marked accepted in an ingest reply).
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    let mut n = 0;
    let mut at = 0;
    while let Some(found) = find(&haystack[at..], needle) {
        n += 1;
        at += found + needle.len();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_non_overlapping_occurrences() {
        let body =
            br#"{"results":[{"status":"accepted"},{"status":"duplicate"},{"status":"accepted"}]}"#;
        assert_eq!(count(body, br#""status":"accepted""#), 2);
        assert_eq!(count(b"", b"x"), 0);
        assert_eq!(count(b"aaaa", b"aa"), 2);
    }
}
