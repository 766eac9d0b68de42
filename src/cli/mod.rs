//! The command line: what each command does, in `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod json;
pub mod summary;

mod console;
mod doctor;
mod events;
mod packets;
mod push;
mod schema;
mod setup;
pub mod site;
mod status;
mod verify;
mod worker;

use relaysync::config::Config;
use relaysync::error::Result;

/// Keeps a head-office PostgreSQL database and many site databases in sync
/// through a relay database.
///
/// A typical setup: `setup relay`, `site add CODE` for each site, `setup ho`
/// on the head office, `setup pos` at each site; then `ho sync --once` and
/// `pos sync --once` from cron, or `ho run` and `pos run` as services.
#[derive(Debug, Parser)]
#[command(name = "relaysync", version, about, long_about)]
pub struct Cli {
    /// The config file (TOML). Every key can be overridden by an environment
    /// variable RELAYSYNC__SECTION__KEY, e.g. RELAYSYNC__POS__SITE=store-002.
    #[arg(
        long,
        global = true,
        default_value = "relaysync.toml",
        env = "RELAYSYNC_CONFIG"
    )]
    pub config: PathBuf,

    /// Print one JSON object per command (per sync, for `run`) on stdout
    /// instead of lines for people.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a database and create what relaysync needs there (idempotent).
    #[command(subcommand)]
    Setup(SetupTarget),
    /// Manage the sites registered in the relay.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Signing keys: packets signed by their writer and checked by the
    /// side that applies them, so that the relay cannot forge or alter them.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The head-office worker: capture HO changes into packets, read acks.
    #[command(subcommand)]
    Ho(WorkerCommand),
    /// The site worker: apply packets for this site in order, ack them.
    #[command(subcommand)]
    Pos(PosCommand),
    /// Schema changes at HO reach the sites in the stream: a site adds
    /// columns, widens types and drops NOT NULL by itself, in the
    /// transaction of the rows that follow. Anything else (a dropped or
    /// retyped column, a new key) holds the site's stream at that packet
    /// (status `Held: schema change`) until its table is changed:
    /// `schema show` lists the held changes as SQL, `schema apply` makes them
    /// at this site.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Reload tables at chosen sites from HO's current data: Sync Selective
    /// (`--site A --site B`) or Sync All (`--all`). HO's worker serves the
    /// request on its next sync; each site applies it on its next sync, in one
    /// transaction that clears and reloads its rows of those tables.
    Push {
        /// A site to reload (repeat for several).
        #[arg(
            long = "site",
            value_name = "CODE",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        sites: Vec<String>,
        /// Every registered site.
        #[arg(long)]
        all: bool,
        /// A table to reload (repeat for several); default: every configured table.
        #[arg(long = "table", value_name = "SCHEMA.TABLE")]
        tables: Vec<String>,
    },
    /// Ask sites to prove they equal HO, table by table, for the rows routed
    /// to them: HO's next sync sends hashes of its tables (by key bucket, from
    /// one snapshot) in the stream; each site, applying them in order,
    /// compares its own in the same transaction and records `equal` or
    /// `drift`. `--show` prints the latest results; `--repair` reloads the
    /// drifting tables at the drifting sites.
    Verify {
        /// A site to verify (repeat for several); default: every site.
        #[arg(long = "site", value_name = "CODE", conflicts_with = "all")]
        sites: Vec<String>,
        /// Every registered site.
        #[arg(long)]
        all: bool,
        /// A table to verify (repeat for several); default: every configured table.
        #[arg(long = "table", value_name = "SCHEMA.TABLE")]
        tables: Vec<String>,
        /// Reload the tables the latest results found drifting, at those sites.
        #[arg(long, conflicts_with = "show")]
        repair: bool,
        /// Print the latest result per site and table.
        #[arg(long)]
        show: bool,
    },
    /// Show each site's status: Not started, In progress, Success, Failed or Held
    /// (a schema change waits, see `schema show`);
    /// with --site, each table ("category") at that site.
    Status {
        /// One site's tables: last full sync, its rows, last delta applied,
        /// pending packets, state.
        #[arg(long, value_name = "CODE")]
        site: Option<String>,
    },
    /// List packets with their status (UPLOADED, PROCESSED, FAILED): HO's
    /// record of what it sent ("sent data"), or with --pos this site's
    /// record of what it received ("received data").
    Packets {
        /// Only the packets this site was a target of (HO's record): those
        /// naming it, and those for every site written since it registered.
        #[arg(long, value_name = "CODE", conflicts_with = "pos")]
        site: Option<String>,
        /// Only packets with this status: UPLOADED, PROCESSED, FAILED (or, with --pos, HELD).
        #[arg(long, value_name = "S")]
        status: Option<String>,
        /// How far back, e.g. 1h, 1d, 7d (default: all).
        #[arg(long)]
        since: Option<String>,
        /// Read this site's record instead of HO's.
        #[arg(long)]
        pos: bool,
    },
    /// Serve the web console: at HO (default) every site's status, Sync
    /// Selective, Sync All, Sent Data, the Event Log and the audit of
    /// actions; with --pos, this site's Synchronization page (Sync Now),
    /// Received Data and Event Log. Log in with a user of `console user
    /// add`; HTTPS with [console] tls_cert and tls_key (needed off
    /// 127.0.0.1). Runs until SIGINT or SIGTERM.
    #[command(args_conflicts_with_subcommands = true)]
    Console {
        /// Where to listen, e.g. 127.0.0.1:8443 (default: [console] listen,
        /// else 127.0.0.1:8443; port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// This site's console ([pos]) instead of HO's.
        #[arg(long)]
        pos: bool,
        #[command(subcommand)]
        command: Option<ConsoleCommand>,
    },
    /// Check everything the config reaches (HO's wal_level, slot, retained
    /// WAL, publication, keys, column drift; the relay's schema, sites,
    /// backlog, clocks; TLS) and print one line per finding, worst first,
    /// each naming the fix. Exits 0 when healthy, 1 when anything is wrong.
    Doctor,
    /// List the event log: at HO (default), rows merged from the sites
    /// (`User update succeeded (Device)`) and rows HO could not store (`Fail
    /// to save to the server DB`, with the error; the row is in
    /// relaysync.rejects); with --pos, this site's log (`User update
    /// succeeded (HO)`).
    Events {
        /// How far back, e.g. 1h, 1d, 7d.
        #[arg(long, default_value = "1d")]
        since: String,
        /// Read this site's log instead of HO's.
        #[arg(long)]
        pos: bool,
    },
    /// Start throwaway PostgreSQL clusters (HO, relay, two sites), sync both
    /// sites and print what happened. Needs PostgreSQL's server binaries.
    Demo,
    /// Measure relaysync beside PostgreSQL's own logical replication (one
    /// CREATE SUBSCRIPTION per site) on throwaway clusters, in one run, and
    /// print a table (workload, relaysync, native, unit, ratio).
    Bench {
        /// Rows of the bulk insert and bulk update workloads.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Sites: relaysync site databases, and as many subscriptions.
        #[arg(long, default_value_t = 10)]
        sites: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Let the sites reach the relay as its owner, bypassing row-level
        /// security (by default each site has its own role): to measure what
        /// the policies cost.
        #[arg(long)]
        owner_sites: bool,
        /// Only the two loads of a deployment's first days: `full_sync` and
        /// `up_events`.
        #[arg(long)]
        loads_only: bool,
        /// Only the latency runs: relaysync, native one hop, native
        /// cascaded through an intermediate server, and relaysync and the
        /// cascade again under a CPU hog on every core.
        #[arg(long, conflicts_with = "loads_only")]
        latency_only: bool,
        /// Instead: the fleet scenario, with N registered sites (default
        /// 2000) beside 2, two of them running, the relay holding 100k
        /// packets for a silent site: `site add`, idle `ho sync --once` and
        /// `pos sync --once`, a 10k-row delta, `status`; then the relay
        /// primary's CPU per site sync, the sites reading packets from it
        /// and from a standby (`[relay] read_url`).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "2000")]
        fleet: Option<usize>,
        /// Instead: what routing by parent costs HO beside routing by a
        /// column (`--rows` parent rows over `--sites` sites; 100k child
        /// rows per run), and HO's memory for the parents' routes.
        #[arg(long)]
        routing: bool,
        /// Instead: what signing packets costs. relaysync unsigned beside
        /// relaysync signed ([ho] signing_key, [pos] trust) on the same
        /// clusters, in alternating rounds: bulk_insert (`--rows` rows),
        /// relay_bytes (per change, with the signed headers) and small_txns;
        /// medians (min–max) and signed / unsigned.
        #[arg(long)]
        signing: bool,
        /// Rounds of each system for --signing.
        #[arg(long, default_value_t = 3, value_name = "N")]
        rounds: usize,
    },
}

/// What `setup` prepares.
#[derive(Debug, Subcommand)]
pub enum SetupTarget {
    /// Create or migrate the relay schema in [relay] url.
    Relay,
    /// Check HO (wal_level, slots, keys) and create the publication and slot.
    Ho,
    /// Check this site's tables against HO's and create its bookkeeping schema.
    Pos,
}

/// Site management.
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Register a site (letters, digits, '-', '_', '.') with a relay role of
    /// its own, which row-level security confines to this site's packets.
    /// Without --role, creates the role relaysync_site_<code> (lowercase,
    /// other characters as '_') and prints its generated password once, or
    /// takes the password from --password-file. Needs CREATEROLE.
    Add {
        code: String,
        /// Bind this existing login role instead of creating one.
        #[arg(long, value_name = "NAME", conflicts_with = "password_file")]
        role: Option<String>,
        /// Read the new role's password from the first line of this file.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Record the site's public key (its `keys generate` .pub file) at
        /// HO, as `site key` does.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Record a site's public key at HO (needs [ho]): with [ho]
    /// signing_key set, HO merges only uploads signed by one of its site's
    /// keys. To rotate, record the new key, switch the site to it, then
    /// --revoke the old one.
    Key {
        code: String,
        /// The site's public key (PEM, as `keys generate` writes it).
        #[arg(long, value_name = "FILE", required_unless_present = "revoke")]
        public_key: Option<PathBuf>,
        /// Forget the site's key with this id.
        #[arg(long, value_name = "KEY_ID", conflicts_with = "public_key")]
        revoke: Option<String>,
    },
    /// Remove a site: its pending packets, acks and full-sync requests, and
    /// its relay role (dropped if `site add` created it, else no longer a
    /// site role).
    Remove { code: String },
    /// List the registered sites.
    List,
}

/// The console's users.
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Manage who may log in to the console.
    #[command(subcommand)]
    User(ConsoleUserCommand),
}

/// Console users, kept in [console] users (Argon2id hashes, mode 0600).
#[derive(Debug, Subcommand)]
pub enum ConsoleUserCommand {
    /// Add a user, or set an existing user's role and password.
    Add {
        name: String,
        /// viewer: sees every page; operator: may also trigger syncs.
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// A file whose first line is the password (at least 12
        /// characters); without it, the password is read from stdin.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove a user (its sessions end at its next request).
    Remove { name: String },
}

/// Key management.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make an Ed25519 key pair: the private key at PATH (PKCS#8 PEM, mode
    /// 0600; name it in [ho] or [pos] signing_key) and the public key at
    /// PATH.pub (give HO's to every site's [pos] trust; a site's to `site
    /// key` at HO).
    Generate {
        /// Where to write the private key.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Replace a key already at PATH.
        #[arg(long)]
        force: bool,
    },
}

/// Held schema changes.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// List the packets sites hold for a schema change, with the change as
    /// SQL: every site's, from the relay (or --site's), or with --pos this
    /// site's own.
    Show {
        /// Only this site's (from the relay).
        #[arg(long, value_name = "CODE", conflicts_with = "pos")]
        site: Option<String>,
        /// This site's own record ([pos] url).
        #[arg(long)]
        pos: bool,
    },
    /// Make the changes this site holds ([pos] url), in one transaction; its
    /// next sync applies the packets that waited for them. Needs a role that
    /// may alter the tables. At HO, with --site or --all: approve the changes
    /// those sites hold; each makes its own on its next sync (its worker's
    /// role must own the tables).
    Apply {
        /// At HO: approve this site's held changes (repeat for several).
        #[arg(long = "site", value_name = "CODE", conflicts_with = "all")]
        sites: Vec<String>,
        /// At HO: approve every site's held changes.
        #[arg(long)]
        all: bool,
    },
}

/// The site worker's commands.
#[derive(Debug, Subcommand)]
pub enum PosCommand {
    /// Apply every packet for this site now, print a summary and exit (for cron).
    Sync {
        /// Run one sync and exit (the only mode of `sync`; `run` repeats).
        #[arg(long)]
        once: bool,
    },
    /// Sync every [sync] interval (default 30m), or whenever HO stores
    /// packets at "0s", until SIGINT or SIGTERM; then stop gracefully.
    Run(RunArgs),
    /// Ask for a clean reload of every table at this site (served by HO's
    /// worker, applied by this site's next sync in one transaction).
    Resync,
}

/// How a worker runs.
#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Sync what is there now, print a summary and exit (for cron).
    Sync {
        /// Run one sync and exit (the only mode of `sync`; `run` repeats).
        #[arg(long)]
        once: bool,
    },
    /// Sync every [sync] interval (default 30m), or stream at "0s", until
    /// SIGINT or SIGTERM; then stop gracefully.
    Run(RunArgs),
}

/// Options of a long-running worker.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics and a health check
    /// at /health (200 while the worker's last cycle succeeded within its
    /// interval, or its stream is live), e.g. 127.0.0.1:9187; overrides
    /// [metrics] listen.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo => return crate::demo::run().await.map(|()| ExitCode::SUCCESS),
        Command::Bench {
            rows,
            sites,
            json,
            owner_sites,
            loads_only,
            latency_only,
            fleet,
            routing,
            signing,
            rounds,
        } => {
            let args = crate::bench::Args {
                rows,
                sites,
                json,
                owner_sites,
                loads_only,
                latency_only,
            };
            if signing {
                return crate::bench::run_signing(args, rounds)
                    .await
                    .map(|()| ExitCode::SUCCESS);
            }
            if routing {
                return crate::bench::run_routing(rows, sites, json)
                    .await
                    .map(|()| ExitCode::SUCCESS);
            }
            if let Some(n) = fleet {
                return crate::bench::run_fleet(n, json)
                    .await
                    .map(|()| ExitCode::SUCCESS);
            }
            return crate::bench::run(args).await.map(|_| ExitCode::SUCCESS);
        }
        Command::Keys(KeysCommand::Generate { out, force }) => {
            let made = relaysync::seal::generate(&out, force)?;
            if cli.json {
                json::print(&serde_json::json!({ "generated": made }));
            } else {
                println!(
                    "key {} written: private {} (keep it secret), public {}",
                    made.id,
                    made.private_key.display(),
                    made.public_key.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let cfg = Config::load(&cli.config)?;
    match cli.command {
        Command::Demo | Command::Bench { .. } | Command::Keys(_) => {
            unreachable!("handled above")
        }
        Command::Setup(target) => setup::run(&cfg, target).await?,
        Command::Site(command) => site::run(&cfg, command).await?,
        Command::Ho(command) => worker::ho(&cfg, command, cli.json).await?,
        Command::Pos(command) => worker::pos(&cfg, command, cli.json).await?,
        Command::Schema(command) => schema::run(&cfg, command, cli.json).await?,
        Command::Push { sites, all, tables } => {
            push::run(&cfg, sites, all, tables, cli.json).await?
        }
        Command::Verify {
            sites,
            all,
            tables,
            repair,
            show,
        } => {
            let args = verify::Args {
                sites,
                all,
                tables,
                repair,
                show,
            };
            verify::run(&cfg, args, cli.json).await?
        }
        Command::Events { since, pos } => events::run(&cfg, since, pos, cli.json).await?,
        Command::Doctor => return doctor::run(&cfg, cli.json).await,
        Command::Console {
            listen,
            pos,
            command,
        } => console::run(&cfg, listen, pos, command, cli.json).await?,
        Command::Status { site } => status::run(&cfg, site, cli.json).await?,
        Command::Packets {
            site,
            status,
            since,
            pos,
        } => packets::run(&cfg, site, status, since, pos, cli.json).await?,
    }
    Ok(ExitCode::SUCCESS)
}
