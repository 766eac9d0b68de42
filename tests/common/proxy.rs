//! A TCP proxy between relaysync and a test cluster that can black-hole
//! every connection open now: it never forwards on them again and never
//! closes them, while new connections pass (a NAT or firewall that forgot
//! its flows, a server moved to another host).

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    /// The port relaysync connects to.
    pub port: u16,
    target: u16,
    /// How many holes there have been: a connection made before the last
    /// one is in it.
    holes: watch::Sender<u64>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Forwards a port of 127.0.0.1 to the cluster listening on `target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (holes, _) = watch::channel(0u64);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (subscribe, spawned) = (holes.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let born = *subscribe.borrow();
                let holes = subscribe.subscribe();
                let conn = tokio::spawn(forward(client, target, born, holes));
                spawned.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy {
            port,
            target,
            holes,
            tasks,
        }
    }

    /// `url` (of the target cluster, on 127.0.0.1) through the proxy.
    pub fn url(&self, url: &str) -> String {
        let direct = format!("127.0.0.1:{}/", self.target);
        assert!(
            url.contains(&direct),
            "{url} is not of port {}",
            self.target
        );
        url.replace(&direct, &format!("127.0.0.1:{}/", self.port))
    }

    /// Every connection open now forwards nothing more, for good; its
    /// sockets stay open.
    pub fn black_hole(&self) {
        self.holes.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn forward(mut client: TcpStream, target: u16, born: u64, mut holes: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let holed = tokio::select! {
        // Either side closed: so does the other (both are dropped).
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = holes.wait_for(|n| *n > born) => true,
    };
    if holed {
        // Held open, forwarding nothing, until the proxy is dropped.
        std::future::pending::<()>().await;
    }
}
