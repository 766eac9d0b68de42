//! Deployments as users make them: several site databases on one
//! PostgreSQL server.

mod common;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.device_events (site text, seq int, kind text, PRIMARY KEY (site, seq));
";
const UPSTREAM: &str = "[[upstream]]\nname = \"public.device_events\"\nmerge = \"append\"\n";

/// Two sites with upstream tables whose databases share one server, with
/// no slot or publication named in the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_on_one_server_need_no_slot_setting() {
    let mut bed = Bed::new("shared", SCHEMA, &[("public.items", "all")], UPSTREAM).await;
    let server = &clusters().sites[0];
    let second = format!("{}_b", bed.name);
    server.create_database(&second).await.unwrap();
    bed.site_urls[1] = server.url(&second);
    bed.site(1).await.batch_execute(SCHEMA).await.unwrap();
    let config = std::fs::read_to_string(&bed.config).unwrap();
    let slot_line = format!("slot = \"{}_up\"\n", bed.name);
    assert!(config.contains(&slot_line));
    std::fs::write(&bed.config, config.replace(&slot_line, "")).unwrap();
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items VALUES (1, 'a')")
        .await
        .unwrap();
    bed.setup().await;
    for (site, code) in SITES.iter().enumerate() {
        bed.site(site)
            .await
            .execute(
                "INSERT INTO public.device_events SELECT $1, g, 'door' FROM generate_series(1, 5) g",
                &[code],
            )
            .await
            .unwrap();
    }
    bed.sync_all().await;
    let ho = bed.ho().await;
    assert_eq!(
        count(&ho, "SELECT count(*) FROM public.device_events").await,
        10
    );
    assert_table_same_everywhere(&bed, "public.items").await;
}

const ROLES_SCHEMA: &str = "
CREATE TABLE public.items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
CREATE TABLE public.prices (site_code text, item_id int, price numeric(10,2), PRIMARY KEY (site_code, item_id));
CREATE TABLE public.device_events (site text, seq int, kind text, PRIMARY KEY (site, seq));
CREATE TABLE public.users (id int PRIMARY KEY, name text);
";

/// The sections of `sql/roles.sql` (`-- == NAME ==`) for database `db`.
fn roles_sql(db: &str) -> std::collections::HashMap<String, String> {
    let text = include_str!("../sql/roles.sql");
    let quoted = format!("DATABASE \"{db}\" ");
    let mut sections = std::collections::HashMap::new();
    for part in text.split("-- == ").skip(1) {
        let (name, body) = part.split_once(" ==\n").expect("a section");
        let body = ["ho", "relay", "pos"]
            .iter()
            .fold(body.to_string(), |b, d| {
                b.replace(&format!("DATABASE {d} "), &quoted)
            });
        sections.insert(name.to_string(), body);
    }
    sections
}

/// `url` as role `role` (the test clusters trust local connections).
fn as_role(url: &str, role: &str) -> String {
    url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1)
}

/// Runs `sql/roles.sql` everywhere but HO's publication, and points the
/// config at the roles; returns the statement that creates the publication.
async fn create_roles(bed: &Bed) -> String {
    let sql = roles_sql(&bed.name);
    let (ho_sql, publication) = sql["HO"].split_once("\nCREATE PUBLICATION").unwrap();
    bed.ho()
        .await
        .batch_execute(&format!("{ho_sql}{}", sql["HO, with [[upstream]]"]))
        .await
        .unwrap();
    bed.relay()
        .await
        .batch_execute(&sql["relay"])
        .await
        .unwrap();
    for (site, code) in SITES.iter().enumerate() {
        let up = sql["site, with [[upstream]]"].replacen(
            "PUBLICATION relaysync_up",
            &format!("PUBLICATION {}", relaysync::config::up_name(code)),
            1,
        );
        let s = bed.site(site).await;
        s.batch_execute(&format!("{}{up}", sql["site"]))
            .await
            .unwrap();
    }
    let config = std::fs::read_to_string(&bed.config).unwrap();
    let config = config
        .replace(&bed.ho_url, &as_role(&bed.ho_url, "relaysync_ho"))
        .replace(&bed.relay_url, &as_role(&bed.relay_url, "relaysync_relay"));
    std::fs::write(&bed.config, config).unwrap();
    format!("CREATE PUBLICATION{publication}").replacen(
        "relaysync",
        &format!("\"{}\"", bed.name),
        1,
    )
}

/// Runs `relaysync args` as site `site` with the roles; its exit code.
async fn run_as_roles(bed: &Bed, site: usize, args: &[&str]) -> Option<i32> {
    let mut cmd = bed.command(site, args);
    cmd.env(
        "RELAYSYNC__POS__URL",
        as_role(&bed.site_urls[site], "relaysync_pos"),
    );
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let code = out.status.code();
    if code != Some(0) {
        eprintln!(
            "relaysync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    code
}

/// Each site logs a device event and HO changes items and prices; then a
/// sync round, all as the roles.
async fn round_as_roles(bed: &Bed) {
    for (site, code) in SITES.iter().enumerate() {
        bed.site(site)
            .await
            .execute(
                "INSERT INTO public.device_events SELECT $1, coalesce(max(seq), 0) + 1, 'door' FROM public.device_events",
                &[code],
            )
            .await
            .unwrap();
    }
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items (name) VALUES ('c'); UPDATE public.prices SET price = price + 1")
        .await
        .unwrap();
    for (site, args) in [
        (0, &["ho", "sync", "--once"][..]),
        (0, &["pos", "sync", "--once"]),
        (1, &["pos", "sync", "--once"]),
        (0, &["ho", "sync", "--once"]),
    ] {
        assert_eq!(run_as_roles(bed, site, args).await, Some(0));
    }
}

/// Every command, run as the roles of `sql/roles.sql`: `setup ho` fails
/// while the publication is missing and leaves nothing behind, then works
/// once the tables' owner created it; the sites sync both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_roles_run_every_command() {
    let bed = Bed::new(
        "roles",
        ROLES_SCHEMA,
        &[("public.items", "all"), ("public.prices", "column:site_code")],
        "[[upstream]]\nname = \"public.device_events\"\nmerge = \"append\"\n[[upstream]]\nname = \"public.users\"\nmerge = \"fill_vacant\"\n",
    )
    .await;
    let publication = create_roles(&bed).await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.items (name) VALUES ('a'), ('b');
         INSERT INTO public.prices VALUES ('s1', 1, 1.5), ('s2', 1, 2.5);",
    )
    .await
    .unwrap();
    for args in [
        &["setup", "relay"][..],
        &["site", "add", "s1"],
        &["site", "add", "s2"],
    ] {
        assert_eq!(run_as_roles(&bed, 0, args).await, Some(0));
    }
    // Without the publication the role may not create: nothing is left.
    assert_eq!(run_as_roles(&bed, 0, &["setup", "ho"]).await, Some(1));
    let left = "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'relaysync')
                     + (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())
                     + (SELECT count(*) FROM pg_publication)";
    assert_eq!(count(&ho, left).await, 0);
    ho.batch_execute(&publication).await.unwrap();
    for (site, args) in [
        (0, &["setup", "ho"]),
        (0, &["setup", "pos"]),
        (1, &["setup", "pos"]),
    ] {
        assert_eq!(run_as_roles(&bed, site, args).await, Some(0));
    }
    for _ in 0..3 {
        round_as_roles(&bed).await;
    }
    assert_eq!(run_as_roles(&bed, 0, &["status"]).await, Some(0));
    assert_table_same_everywhere(&bed, "public.items").await;
    for site in 0..SITES.len() {
        assert_routed_same(&bed, site, "public.prices", "site_code").await;
    }
    assert_eq!(
        count(&ho, "SELECT count(*) FROM public.device_events").await,
        6
    );
    assert_all_processed(&bed).await;
}
