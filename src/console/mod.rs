//! The console: the operators' screens as web pages, served by relaysync
//! itself. HO's console shows every site (Sites, a site's tables, Data
//! Sync, Sent Data, Event Log, Audit); a site's console shows that site
//! only (Synchronization, Received Data, Event Log, Audit).
//!
//! Every page reads through [`crate::service`], as the command line does.
//! Nothing is reachable without a login but `/health`; sessions live in
//! this process (a restart logs everyone out); every form carries the
//! session's CSRF token, and actions are for operators only and recorded
//! in the audit log of the side's own database.

mod auth;
mod checks;
mod pages;
mod site_pages;
pub mod users;
mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;

use crate::book::Side;
use crate::config::Config;
use crate::error::{Error, Result};
pub use users::{Role, Users};

/// How to serve the console.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// HO's console or this site's.
    pub side: Side,
    /// The users file.
    pub users: PathBuf,
    /// The certificate chain and private key (PEM) to serve HTTPS with.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The running worker beside it (`ho run`, `pos run`): notified to
    /// sync now after a request or a site's Sync Now (else a site's Sync
    /// Now runs one sync itself).
    pub sync_now: Option<Arc<tokio::sync::Notify>>,
}

impl Options {
    /// The options `[console]` gives, `listen` overriding its address.
    pub fn from_config(cfg: &Config, side: Side, listen: Option<SocketAddr>) -> Result<Options> {
        let c = &cfg.console;
        let listen = match listen {
            Some(a) => a,
            None => c
                .listen
                .as_deref()
                .unwrap_or(DEFAULT_LISTEN)
                .parse()
                .map_err(|e| {
                    Error::Config(format!(
                        "[console] listen: {e}; write host:port, e.g. {DEFAULT_LISTEN}"
                    ))
                })?,
        };
        let tls = match (&c.tls_cert, &c.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "[console] needs both tls_cert and tls_key (PEM files), or neither".into(),
                ))
            }
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "the console would serve passwords in clear text on {listen}: set [console] tls_cert and tls_key, or listen on 127.0.0.1"
            )));
        }
        match side {
            Side::Ho => {
                cfg.ho()?;
                cfg.relay()?;
            }
            Side::Site => {
                cfg.pos()?;
                cfg.relay()?;
            }
        }
        Ok(Options {
            listen,
            side,
            users: c.users.clone().unwrap_or_else(|| DEFAULT_USERS.into()),
            tls,
            sync_now: None,
        })
    }
}

/// Where the console listens unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The users file unless `[console] users` names one.
pub const DEFAULT_USERS: &str = "relaysync-console-users.json";

/// What every request shares.
pub(crate) struct App {
    cfg: Config,
    side: Side,
    users: Users,
    /// Cookies are marked Secure (served over TLS).
    secure: bool,
    sessions: Mutex<HashMap<String, auth::Session>>,
    /// A site's Sync Now, while it runs, and how the last one ended.
    site_sync: Mutex<site_pages::SyncRun>,
    /// See [`Options::sync_now`].
    sync_now: Option<Arc<tokio::sync::Notify>>,
}

impl App {
    /// Wakes the worker beside the console, if there is one.
    pub(crate) fn wake_worker(&self) -> bool {
        match &self.sync_now {
            Some(now) => {
                now.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The console's routes.
fn router(app: Arc<App>) -> Router {
    let common = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/console.css", get(view::css))
        .route("/static/console.js", get(view::js))
        .route("/audit", get(pages::audit))
        .route("/doctor", get(checks::doctor))
        .route("/events", get(pages::events))
        .route("/events.csv", get(pages::events_csv));
    let side = match app.side {
        Side::Ho => Router::new()
            .route(
                "/",
                get(|| async { axum::response::Redirect::to("/sites") }),
            )
            .route("/sites", get(pages::sites))
            .route("/sites/{code}", get(pages::site))
            .route("/sites/{code}/sync", post(pages::site_sync))
            .route("/sites/{code}/resync", post(pages::site_resync))
            .route(
                "/datasync",
                get(pages::datasync).post(pages::datasync_request),
            )
            .route("/sent", get(pages::sent))
            .route("/sent/{packet}", get(pages::packet))
            .route("/verify", get(checks::verify).post(checks::verify_request)),
        Side::Site => Router::new()
            .route("/", get(|| async { axum::response::Redirect::to("/sync") }))
            .route(
                "/sync",
                get(site_pages::synchronization).post(site_pages::sync_now),
            )
            .route("/received", get(site_pages::received)),
    };
    common
        .merge(side)
        .layer(axum::middleware::map_response(view::security_headers))
        .with_state(app)
}

/// A console bound to its address, its users and certificate checked.
pub struct Console {
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
}

impl Console {
    /// Checks the users file and the certificate, and listens (port 0
    /// picks a free port).
    pub async fn bind(cfg: Config, opts: Options) -> Result<Console> {
        let users = Users::new(&opts.users);
        if users.count()? == 0 {
            return Err(Error::Config(format!(
                "the console has no users in {}: add one with `relaysync console user add NAME --role operator --password-file FILE`",
                opts.users.display()
            )));
        }
        let acceptor = match &opts.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| Error::Io {
                context: format!(
                    "cannot listen on {} for the console; choose a free address with --listen or [console] listen",
                    opts.listen
                ),
                source,
            })?;
        let app = Arc::new(App {
            cfg,
            side: opts.side,
            users,
            secure: acceptor.is_some(),
            sessions: Mutex::new(HashMap::new()),
            site_sync: Mutex::new(site_pages::SyncRun::default()),
            sync_now: opts.sync_now,
        });
        Ok(Console {
            listener,
            acceptor,
            app,
        })
    }

    /// Its address, as `https://host:port/` (or `http://` on loopback
    /// without a certificate).
    pub fn url(&self) -> Result<String> {
        let addr = self.listener.local_addr().map_err(|source| Error::Io {
            context: "reading the console's address".into(),
            source,
        })?;
        let scheme = if self.acceptor.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{addr}/"))
    }

    /// Serves until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let Console {
            listener,
            acceptor,
            app,
        } = self;
        let service = router(app);
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(service.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(tls);
                            let _ = http.serve_connection(io, service).await;
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = stop => {}
        }
    }
}

/// The TLS server side, with the crypto every other connection uses.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Config(format!(
            "[console] {what} {}: {e}; name a PEM file",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|c| c.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| bad("tls_cert", cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls_key", key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("console TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        Error::Config(format!(
            "[console] tls_cert and tls_key do not go together: {e}"
        ))
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
