//! A small SMTP server that speaks real SMTP over TCP and keeps what it receives, for asserting
//! what `rosterd`'s outbox worker delivers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

/// A message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Headers and body, dot-unstuffed, lines joined with `\n`.
    pub data: String,
}

impl Received {
    /// The value of a header (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\n\n").next()?;
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut lines = head.lines().peekable();
        while let Some(line) = lines.next() {
            if line.to_ascii_lowercase().starts_with(&prefix) {
                let mut value = line[prefix.len()..].trim().to_owned();
                while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                }
                return Some(value);
            }
        }
        None
    }

    /// The body, after the blank line, decoded when it is quoted-printable (lines over 76
    /// characters, such as a link, make it so).
    pub fn body(&self) -> String {
        let raw = self.data.split_once("\n\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        let quoted =
            self.header("Content-Transfer-Encoding").is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if quoted { decode_quoted_printable(&raw) } else { raw }
    }

    /// The token of the password link in the body (`token=rpl_…`), if there is one.
    pub fn link_token(&self) -> Option<String> {
        let body = self.body();
        let at = body.find("token=rpl_")? + "token=".len();
        body.get(at..at + 68).map(str::to_owned)
    }
}

/// Quoted-printable (RFC 2045): `=` at a line's end joins it to the next; `=XX` is a byte.
fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the sink answers the end of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `250`: accepted.
    Accept,
    /// `550`: refused for good.
    RejectPermanently,
}

/// See the module documentation.
pub struct SmtpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    gate: Arc<Gate>,
    task: JoinHandle<()>,
}

/// Holds the answer to each message's end of DATA until the test lets it go.
struct Gate {
    closed: bool,
    arrived: Notify,
    permits: Semaphore,
}

impl SmtpSink {
    /// Listens on a free loopback port.
    pub async fn start(mode: Mode) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address"), mode).await
    }

    /// Listens on `addr`.
    pub async fn start_on(addr: SocketAddr, mode: Mode) -> Self {
        Self::listen(addr, mode, false).await
    }

    /// Listens on a free loopback port, accepting messages but holding each acceptance (`250`)
    /// until [`SmtpSink::open`] — a message the client has fully sent but not yet seen accepted.
    pub async fn start_gated() -> Self {
        Self::listen("127.0.0.1:0".parse().expect("address"), Mode::Accept, true).await
    }

    async fn listen(addr: SocketAddr, mode: Mode, closed: bool) -> Self {
        let gate = Arc::new(Gate { closed, arrived: Notify::new(), permits: Semaphore::new(0) });
        let listener = TcpListener::bind(addr).await.expect("bind SMTP sink");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let held = gate.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                let gate = held.clone();
                tokio::spawn(async move {
                    let _ = session(socket, mode, store, gate).await;
                });
            }
        });
        Self { addr, received, gate, task }
    }

    /// Waits until a message's DATA has fully arrived at a gated sink.
    pub async fn data_arrived(&self) {
        self.gate.arrived.notified().await;
    }

    /// Lets every held and future message be accepted.
    pub fn open(&self) {
        // Each held session takes the permit and gives it back, so one lets everything through.
        self.gate.permits.add_permits(1);
    }

    /// `smtp://` URL for rosterd's configuration.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    mode: Mode,
    store: Arc<Mutex<Vec<Received>>>,
    gate: Arc<Gate>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => write.write_all(b"250-sink.test\r\n250 8BITMIME\r\n").await?,
            "MAIL" => {
                mail_from = command.split_once(':').map_or("", |(_, rest)| rest).trim().to_owned();
                rcpt_to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "RCPT" => {
                rcpt_to.push(command.split_once(':').map_or("", |(_, rest)| rest).trim().to_owned());
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    let text = line.trim_end_matches(['\r', '\n']);
                    if text == "." {
                        break;
                    }
                    data.push(text.strip_prefix('.').filter(|_| text.starts_with("..")).unwrap_or(text).to_owned());
                }
                if gate.closed {
                    gate.arrived.notify_one();
                    drop(gate.permits.acquire().await);
                }
                match mode {
                    Mode::Accept => {
                        store.lock().expect("lock").push(Received {
                            mail_from: mail_from.clone(),
                            rcpt_to: rcpt_to.clone(),
                            data: data.join("\n"),
                        });
                        write.write_all(b"250 OK queued\r\n").await?;
                    }
                    Mode::RejectPermanently => write.write_all(b"550 mailbox unavailable\r\n").await?,
                }
            }
            "RSET" | "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 command not implemented\r\n").await?,
        }
    }
}
