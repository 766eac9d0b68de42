//! TLS on every connection: a cluster with `ssl = on`, a CA and server
//! certificate made for the test, and a pg_hba.conf with `hostssl` and
//! `scram-sha-256` only. With `sslmode=verify-full` the down path, the up
//! path, full sync and streaming all work; a wrong CA, a wrong host name or
//! `sslmode=disable` fails with one line naming the fix.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use relaysync_cluster::Cluster;

const PASSWORD: &str = "Hunter2secret";
const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.device_events (id int PRIMARY KEY, what text);
";

/// One TLS cluster holding HO, relay and site databases; `postgres` and the
/// relay's owner log in over TCP with a password only.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start_tls("test-tls", &[]).expect("start a TLS cluster"))
}

struct TlsBed {
    name: String,
    dir: PathBuf,
    config: PathBuf,
}

impl TlsBed {
    async fn new(name: &str) -> TlsBed {
        let c = cluster();
        for db in ["ho", "relay", "pos"] {
            c.create_database(&format!("{name}_{db}")).await.unwrap();
        }
        let admin = client(&c.url("postgres")).await;
        static PASSWORD_SET: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        PASSWORD_SET
            .get_or_init(|| async {
                let sql = format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'");
                admin.batch_execute(&sql).await.unwrap();
            })
            .await;
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE owner_{name} LOGIN CREATEROLE PASSWORD '{PASSWORD}';
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 GRANT CREATE ON DATABASE {name}_relay TO owner_{name};"
            ))
            .await
            .unwrap();
        for db in ["ho", "pos"] {
            client(&c.url(&format!("{name}_{db}")))
                .await
                .batch_execute(SCHEMA)
                .await
                .unwrap();
        }
        let dir = std::env::temp_dir().join(format!("relaysync-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bed = TlsBed {
            name: name.to_string(),
            config: dir.join("relaysync.toml"),
            dir,
        };
        let ho = c.tls_url("postgres", PASSWORD, &format!("{name}_ho"));
        let relay = c.tls_url(&format!("owner_{name}"), PASSWORD, &format!("{name}_relay"));
        let pos = c.tls_url("postgres", PASSWORD, &format!("{name}_pos"));
        std::fs::write(
            &bed.config,
            format!(
                "[ho]\nurl = \"{ho}\"\nslot = \"{name}\"\npublication = \"{name}\"\n\
                 [relay]\nurl = \"{relay}\"\n[pos]\nsite = \"s1\"\nurl = \"{pos}\"\nslot = \"{name}_up\"\n\
                 [sync]\ninterval = \"0s\"\n\
                 [[tables]]\nname = \"public.items\"\n[[upstream]]\nname = \"public.device_events\"\nmerge = \"append\"\n"
            ),
        )
        .unwrap();
        bed
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaysync"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.command(args, env).output().unwrap();
        assert!(
            out.status.success(),
            "relaysync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args` expecting exit 1 with one line on stderr; returns it.
    fn fails(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.command(args, env).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(1), "relaysync {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        stderr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_carries_down_up_full_sync_and_streaming() {
    let bed = TlsBed::new("e2e").await;
    let c = cluster();
    bed.ok(&["setup", "relay"], &[]);
    let pw_file = bed.dir.join("site.pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    bed.ok(
        &[
            "site",
            "add",
            "s1",
            "--password-file",
            pw_file.to_str().unwrap(),
        ],
        &[],
    );
    let site_relay = c.tls_url("relaysync_site_s1", PASSWORD, "e2e_relay");
    let site_env = [("RELAYSYNC__RELAY__URL", site_relay.as_str())];
    let ho = client(&c.url("e2e_ho")).await;
    let pos = client(&c.url("e2e_pos")).await;
    ho.batch_execute(
        "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 100) g",
    )
    .await
    .unwrap();
    bed.ok(&["setup", "ho"], &[]);
    bed.ok(&["setup", "pos"], &site_env);

    // Full sync (first contact), then a delta down.
    bed.ok(&["ho", "sync", "--once"], &[]);
    bed.ok(&["pos", "sync", "--once"], &site_env);
    assert_eq!(count(&pos, "SELECT count(*) FROM public.items").await, 100);
    ho.batch_execute("UPDATE public.items SET name = 'changed' WHERE id <= 10")
        .await
        .unwrap();
    bed.ok(&["ho", "sync", "--once"], &[]);
    bed.ok(&["pos", "sync", "--once"], &site_env);
    assert_eq!(
        count(
            &pos,
            "SELECT count(*) FROM public.items WHERE name = 'changed'"
        )
        .await,
        10
    );

    // Up: the site's events reach HO.
    pos.batch_execute("INSERT INTO public.device_events VALUES (1, 'door'), (2, 'card')")
        .await
        .unwrap();
    bed.ok(&["pos", "sync", "--once"], &site_env);
    bed.ok(&["ho", "sync", "--once"], &[]);
    assert_eq!(
        count(&ho, "SELECT count(*) FROM public.device_events").await,
        2
    );

    // Streaming: every relaysync connection, replication included, is TLS.
    let ho_run = Worker::start(bed.command(&["ho", "run"], &[]));
    let pos_run = Worker::start(bed.command(&["pos", "run"], &site_env));
    ho.batch_execute("INSERT INTO public.items VALUES (1000, 'streamed')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the streamed row at the site",
        || async { count(&pos, "SELECT count(*) FROM public.items WHERE id = 1000").await == 1 },
    )
    .await;
    let admin = client(&c.url("postgres")).await;
    let plain = "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.application_name LIKE 'relaysync%' AND NOT s.ssl";
    let walsenders = "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.backend_type = 'walsender' AND s.ssl";
    assert_eq!(count(&admin, plain).await, 0);
    assert!(count(&admin, walsenders).await >= 1);
    assert!(ho_run.stop().status.success());
    assert!(pos_run.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_host_or_sslmode_fails_with_the_fix() {
    let bed = TlsBed::new("bad").await;
    let c = cluster();
    let good = c.tls_url("owner_bad", PASSWORD, "bad_relay");
    bed.ok(&["setup", "relay"], &[("RELAYSYNC__RELAY__URL", &good)]);
    // Another CA: a second throwaway cluster's.
    let other = tokio::task::spawn_blocking(|| Cluster::start_tls("test-tls-other", &[]).unwrap())
        .await
        .unwrap();
    let wrong_ca = good.replace(
        &c.ca_file().display().to_string(),
        &other.ca_file().display().to_string(),
    );
    // A name the certificate does not carry (reached at 127.0.0.1 all the same).
    let wrong_host = other_name(&good);
    let no_tls = good.replace("sslmode=verify-full", "sslmode=disable");
    let no_ca = format!("{}?sslmode=verify-full", good.split('?').next().unwrap());
    for (url, fix) in [
        (&wrong_ca, "sslrootcert"),
        (&wrong_host, "verify-ca"),
        (&no_tls, "sslmode=verify-full"),
        (&no_ca, "sslrootcert="),
    ] {
        let line = bed.fails(&["status"], &[("RELAYSYNC__RELAY__URL", url)]);
        assert!(line.contains(fix), "{url}: {line}");
    }
    // The replication connection checks the same way.
    let ho_other_name = other_name(&c.tls_url("postgres", PASSWORD, "bad_ho"));
    let line = bed.fails(&["setup", "ho"], &[("RELAYSYNC__HO__URL", &ho_other_name)]);
    assert!(line.contains("verify-ca"), "{line}");
}

/// `url` (to `localhost`) naming a host its certificate does not carry,
/// reached at 127.0.0.1 (libpq's `hostaddr`).
fn other_name(url: &str) -> String {
    url.replace("@localhost:", "@not-on-the-certificate.invalid:")
        .replace("sslmode=", "hostaddr=127.0.0.1&sslmode=")
}

/// Registers site s1 bound to a role of the bed's own (roles are the
/// cluster's, and `relaysync_site_s1` belongs to another test).
async fn bind_site(bed: &TlsBed) {
    let role = format!("site_{}", bed.name);
    client(&cluster().url("postgres"))
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))
        .await
        .unwrap();
    bed.ok(&["site", "add", "s1", "--role", &role], &[]);
}

/// Inserts row `id` at HO, syncs HO then the site (`ho_url` for HO, the
/// relay as its owner for the site): whether the row reached the site.
async fn carried(bed: &TlsBed, ho: &tokio_postgres::Client, ho_url: &str, id: i32) -> bool {
    ho.execute("INSERT INTO public.items VALUES ($1, 'carried')", &[&id])
        .await
        .unwrap();
    let env = [("RELAYSYNC__HO__URL", ho_url)];
    bed.ok(&["ho", "sync", "--once"], &env);
    bed.ok(&["pos", "sync", "--once"], &env);
    let pos = client(&cluster().url(&format!("{}_pos", bed.name))).await;
    let q = format!("SELECT count(*) FROM public.items WHERE id = {id}");
    count(&pos, &q).await == 1
}

/// The replication connection accepts what every other connection (and
/// libpq) accepts: verify-full to an IP address the certificate carries,
/// verify-ca to a name it does not, a certificate naming the server in its
/// CN only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_connection_verifies_as_every_connection_does() {
    let bed = TlsBed::new("repl").await;
    let c = cluster();
    bed.ok(&["setup", "relay"], &[]);
    bind_site(&bed).await;
    let by_name = c.tls_url("postgres", PASSWORD, "repl_ho");
    let by_ip = by_name.replace("@localhost:", "@127.0.0.1:");
    let ca_only = other_name(&by_name).replace("sslmode=verify-full", "sslmode=verify-ca");
    bed.ok(&["setup", "ho"], &[("RELAYSYNC__HO__URL", &by_ip)]);
    bed.ok(&["setup", "pos"], &[]);
    let ho = client(&c.url("repl_ho")).await;
    assert!(carried(&bed, &ho, &by_ip, 1).await, "verify-full by IP");
    assert!(
        carried(&bed, &ho, &ca_only, 2).await,
        "verify-ca, another name"
    );

    // HO's server with a certificate that names it in its CN only.
    let cn =
        tokio::task::spawn_blocking(|| Cluster::start_tls_common_name("test-tls-cn", &[]).unwrap())
            .await
            .unwrap();
    cn.create_database("cn_ho").await.unwrap();
    let admin = client(&cn.url("postgres")).await;
    admin
        .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"))
        .await
        .unwrap();
    let cn_ho = client(&cn.url("cn_ho")).await;
    cn_ho.batch_execute(SCHEMA).await.unwrap();
    let cn_bed = TlsBed::new("cnbed").await;
    let cn_url = cn.tls_url("postgres", PASSWORD, "cn_ho");
    cn_bed.ok(&["setup", "relay"], &[]);
    bind_site(&cn_bed).await;
    cn_bed.ok(&["setup", "ho"], &[("RELAYSYNC__HO__URL", &cn_url)]);
    cn_bed.ok(&["setup", "pos"], &[]);
    assert!(
        carried(&cn_bed, &cn_ho, &cn_url, 3).await,
        "a CN-only certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_where_pg_hba_asks_for_one() {
    let bed = TlsBed::new("cert").await;
    let c = cluster();
    let user = relaysync_cluster::CERT_USER;
    let admin = client(&c.url("postgres")).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {user} LOGIN CREATEROLE;
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT CREATE ON DATABASE cert_relay TO {user};"
        ))
        .await
        .unwrap();
    let (cert, key) = c.client_cert();
    // No password: the certificate is the credential.
    let url = c
        .tls_url(user, "x", "cert_relay")
        .replace(&format!("{user}:x@"), &format!("{user}@"));
    let with_cert = format!("{url}&sslcert={}&sslkey={}", cert.display(), key.display());
    bed.ok(
        &["setup", "relay"],
        &[("RELAYSYNC__RELAY__URL", &with_cert)],
    );
    let line = bed.fails(&["status"], &[("RELAYSYNC__RELAY__URL", &url)]);
    assert!(line.contains("relay"), "{line}");
}

/// Everything a command wrote, with RELAYSYNC_LOG=debug.
fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_and_may_come_from_a_file_or_the_environment() {
    let bed = TlsBed::new("secret").await;
    let c = cluster();
    let debug = [("RELAYSYNC_LOG", "debug")];
    let pw_file = bed.dir.join("site.pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let site_relay = c.tls_url("relaysync_site_secret_1", PASSWORD, "secret_relay");
    let site = [
        ("RELAYSYNC_LOG", "debug"),
        ("RELAYSYNC__POS__SITE", "secret-1"),
        ("RELAYSYNC__RELAY__URL", site_relay.as_str()),
    ];
    let wrong = c.tls_url("postgres", &format!("Nope{PASSWORD}"), "secret_ho");
    let bad_mode = format!(
        "{}&sslmode=sometimes",
        c.tls_url("postgres", PASSWORD, "secret_ho")
    );
    type Run<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, bool);
    let runs: Vec<Run> = vec![
        (vec!["setup", "relay"], debug.to_vec(), true),
        (
            vec![
                "site",
                "add",
                "secret-1",
                "--password-file",
                pw_file.to_str().unwrap(),
            ],
            debug.to_vec(),
            true,
        ),
        (vec!["setup", "ho"], debug.to_vec(), true),
        (vec!["setup", "pos"], site.to_vec(), true),
        (vec!["ho", "sync", "--once"], debug.to_vec(), true),
        (vec!["pos", "sync", "--once"], site.to_vec(), true),
        (vec!["ho", "sync", "--once"], debug.to_vec(), true),
        (vec!["status"], debug.to_vec(), true),
        (vec!["pos", "resync"], site.to_vec(), true),
        (vec!["--help"], debug.to_vec(), true),
        (vec!["site", "add", "--help"], debug.to_vec(), true),
        (
            vec!["ho", "sync", "--once"],
            vec![("RELAYSYNC_LOG", "debug"), ("RELAYSYNC__HO__URL", &wrong)],
            false,
        ),
        (
            vec!["status"],
            vec![
                ("RELAYSYNC_LOG", "debug"),
                ("RELAYSYNC__RELAY__URL", &bad_mode),
            ],
            false,
        ),
    ];
    for (args, env, success) in &runs {
        let out = bed.command(args, env).output().unwrap();
        assert_eq!(
            out.status.success(),
            *success,
            "{args:?}: {}",
            all_output(&out)
        );
        let text = all_output(&out);
        assert!(
            !text.contains(PASSWORD),
            "{args:?} shows the password: {text}"
        );
    }
    // A streaming worker's debug log.
    let mut cmd = bed.command(&["pos", "run"], &site);
    cmd.stderr(Stdio::piped()).stdout(Stdio::piped());
    let worker = Worker::start(cmd);
    let pos = client(&c.url("secret_pos")).await;
    wait_for(
        Duration::from_secs(60),
        "the resync at the site",
        || async {
            bed.ok(&["ho", "sync", "--once"], &[]);
            count(&pos, "SELECT count(*) FROM relaysync.table_sync").await > 0
        },
    )
    .await;
    let out = worker.stop();
    assert!(!all_output(&out).contains(PASSWORD));

    // The password kept out of the URLs: HO's from a file, the relay's from
    // the environment.
    let config = std::fs::read_to_string(&bed.config).unwrap();
    let without = config.replace(&format!(":{PASSWORD}@"), "@").replace(
        "[relay]",
        &format!("password_file = \"{}\"\n[relay]", pw_file.display()),
    );
    assert!(!without.contains(PASSWORD));
    std::fs::write(&bed.config, without).unwrap();
    assert!(!bed
        .command(&["ho", "sync", "--once"], &[])
        .output()
        .unwrap()
        .status
        .success());
    bed.ok(
        &["ho", "sync", "--once"],
        &[("RELAYSYNC__RELAY__PASSWORD", PASSWORD)],
    );
}
