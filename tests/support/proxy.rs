//! A TCP proxy the test controls, to make a network partition: while
//! paused it keeps every connection open but moves no byte either way, as
//! a cable pulled somewhere between two machines would.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    /// Where to connect to go through the proxy (`127.0.0.1:port`).
    pub addr: String,
    paused: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `target`.
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (paused, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, watching) = (target.clone(), watching.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        forward(in_read, out_write, watching.clone()),
                        forward(out_read, in_write, watching),
                    );
                });
            }
        });
        Proxy { addr, paused, task }
    }

    /// Stops moving bytes; connections stay open.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Moves bytes again, what was held first.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is paused.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if paused.wait_for(|paused| !paused).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|paused| !paused).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
