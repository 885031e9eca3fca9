//! [`FragmentingProxy`]: the test server's answers passed on one protocol
//! message at a time.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::TestDb;

/// How long the proxy waits between two messages it already holds: long
/// enough for the client to read the first before the second arrives.
const PAUSE: Duration = Duration::from_millis(1);

/// A TCP proxy on 127.0.0.1 in front of a test server that passes on what
/// the server sends one protocol message at a time, pausing between them,
/// so that the client reads an answer of n messages in n reads. What the
/// client sends goes through unchanged.
///
/// On loopback the server's answer to a round trip nearly always arrives
/// in one read; a pooler, a TLS terminator or a busy network cuts answers
/// up at places of its own. Code that works only when an answer arrives
/// whole passes every other test and hangs in production: through this
/// proxy it fails in every run.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let test_db = orm_tests::TestDb::new().await;
/// let proxy = orm_tests::FragmentingProxy::start(&test_db.config()).await;
/// let db = orm_core::Database::connect(&proxy.url(&test_db)).unwrap();
/// let mut session = db.session();
/// let rows = session.query_rows("SELECT 1 AS one, 2 AS two", &[]).await.unwrap();
/// assert_eq!(rows[0].get::<_, i32>("two"), 2);
/// # }
/// ```
#[derive(Debug)]
pub struct FragmentingProxy {
    port: u16,
    user: String,
    password: Option<String>,
    accepting: JoinHandle<()>,
}

impl FragmentingProxy {
    /// Starts a proxy in front of the server `server` names (its first
    /// host, over TCP), on a free port of 127.0.0.1. It serves until it is
    /// dropped, and its connections end with it.
    ///
    /// # Panics
    ///
    /// If `server` names a Unix socket rather than a TCP host, or no port
    /// is free.
    pub async fn start(server: &Config) -> Self {
        let host = match server.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            None => "localhost".to_owned(),
            Some(other) => panic!("the proxy forwards to a TCP host, not to {other:?}"),
        };
        let port = server.get_ports().first().copied().unwrap_or(5432);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port on 127.0.0.1");
        let local = listener.local_addr().expect("the listener's address").port();
        let accepting = tokio::spawn(async move {
            // Dropped with the accepting task, this aborts every relay.
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                relays.spawn(relay(client, host.clone(), port));
            }
        });
        FragmentingProxy {
            port: local,
            user: server.get_user().unwrap_or("postgres").to_owned(),
            password: server.get_password().map(|password| String::from_utf8_lossy(password).into_owned()),
            accepting,
        }
    }

    /// The connection string of `test_db` through this proxy, in
    /// `key=value` form, without TLS (the proxy reads the messages).
    /// Parameters of the ORM's may follow, separated by spaces.
    pub fn url(&self, test_db: &TestDb) -> String {
        let password = self.password.as_deref().map(|password| format!(" password={}", quoted(password)));
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=disable{}",
            self.port,
            quoted(&self.user),
            quoted(test_db.name()),
            password.unwrap_or_default()
        )
    }
}

impl Drop for FragmentingProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// A value of a `key=value` connection string, quoted as libpq reads it.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Relays one client's connection to the server until either side closes it.
async fn relay(client: TcpStream, host: String, port: u16) {
    let Ok(server) = TcpStream::connect((host.as_str(), port)).await else { return };
    // Each message is its own segment, not held back to be coalesced.
    if client.set_nodelay(true).is_err() || server.set_nodelay(true).is_err() {
        return;
    }
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    };
    let downstream = async {
        let _ = one_message_at_a_time(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Copies `from` to `to`, a protocol message to a write, pausing between
/// messages that arrived together.
async fn one_message_at_a_time(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let mut buffer = bytes::BytesMut::with_capacity(8192);
    loop {
        if from.read_buf(&mut buffer).await? == 0 {
            return to.write_all(&buffer).await;
        }
        while let Some(length) = complete_message(&buffer) {
            to.write_all(&buffer.split_to(length)).await?;
            to.flush().await?;
            if complete_message(&buffer).is_some() {
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// The length of the message at the start of `buffer` (a type byte, then
/// a big-endian length that counts itself), if all of it is there.
fn complete_message(buffer: &[u8]) -> Option<usize> {
    let length = u32::from_be_bytes(buffer.get(1..5)?.try_into().ok()?);
    let length = usize::try_from(length).ok()? + 1;
    (buffer.len() >= length).then_some(length)
}
