//! Schema changes at HO under a running fleet: additive changes reach every
//! site by themselves, in the transaction of the rows that follow them;
//! the rest hold the site's stream, shown as SQL, until the site's table is
//! changed (`schema apply`, or by hand).

mod common;

use common::*;
use serde_json::Value;

const ITEMS: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name varchar(10) NOT NULL, qty smallint);
";

const ROWS: &str = "INSERT INTO public.items VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3)";

/// Each column's name, type and nullability, in order.
const COLUMNS: &str = "SELECT attnum, attname, format_type(atttypid, atttypmod), attnotnull
                         FROM pg_attribute WHERE attrelid = 'public.items'::regclass
                          AND attnum > 0 AND NOT attisdropped";

/// The rows of public.items, whole.
const ITEM_ROWS: &str = "SELECT t::text FROM public.items t";

/// Site `site` has HO's rows and columns.
async fn assert_like_ho(bed: &Bed, site: usize) {
    assert_same(bed, site, ITEM_ROWS, ITEM_ROWS).await;
    let named = "SELECT attname, format_type(atttypid, atttypmod), attnotnull
                   FROM pg_attribute WHERE attrelid = 'public.items'::regclass
                    AND attnum > 0 AND NOT attisdropped";
    assert_same(bed, site, named, named).await;
}

/// One more round of syncs brings both sites to HO's rows and columns,
/// and `verify` finds them equal.
async fn converges(bed: &Bed) {
    bed.sync_all().await;
    for site in 0..2 {
        assert_like_ho(bed, site).await;
    }
    assert_all_processed(bed).await;
    verified_equal(bed).await;
}

/// `verify` of every site and table, then `verify --show`: all equal.
async fn verified_equal(bed: &Bed) {
    bed.ok(0, &["verify"]).await;
    bed.sync_all().await;
    let v = json(bed, 0, &["verify", "--show"]).await;
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    assert!(results.iter().all(|r| r["status"] == "equal"), "{v}");
}

/// HO's change reaches the sites, and both hold it: nothing applied.
async fn held_at_both(bed: &Bed) {
    bed.ok(0, &["ho", "sync", "--once"]).await;
    for site in 0..2 {
        let out = bed.run(site, &["pos", "sync", "--once"]).await;
        assert!(!out.status.success(), "a held packet is not applied");
    }
    bed.ok(0, &["ho", "sync", "--once"]).await;
}

async fn items_bed(name: &str) -> Bed {
    let bed = Bed::new(name, ITEMS, &[("public.items", "all")], "").await;
    bed.ho().await.batch_execute(ROWS).await.unwrap();
    bed.setup().await;
    bed
}

/// `relaysync args --json` as site `site`, parsed.
async fn json(bed: &Bed, site: usize, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bed.ok(site, &all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The status HO's `status --json` gives site `code`.
async fn site_state(bed: &Bed, code: &str) -> String {
    let status = json(bed, 0, &["status"]).await;
    status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == code)
        .map(|s| s["status"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_columns_widened_types_and_dropped_not_null_reach_every_site() {
    let bed = items_bed("schema_additive").await;
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.items ALTER COLUMN name TYPE varchar(40);
             ALTER TABLE public.items ALTER COLUMN name DROP NOT NULL;
             ALTER TABLE public.items ALTER COLUMN qty TYPE int;
             -- existing rows get 9.50 without a rewrite: the sites' must too
             ALTER TABLE public.items ADD COLUMN price numeric(10,2) NOT NULL DEFAULT 9.50;
             ALTER TABLE public.items ADD COLUMN note text;
             INSERT INTO public.items VALUES (4, 'a name longer than ten', 70000, 3.25, 'new'),
                                             (5, NULL, 5, DEFAULT, NULL);
             UPDATE public.items SET note = 'changed' WHERE id = 1;",
        )
        .await
        .unwrap();
    converges(&bed).await;
    assert_eq!(site_state(&bed, "s1").await, "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_column_holds_the_sites_until_their_tables_are_changed() {
    let bed = items_bed("schema_held").await;
    // An ADD and a DROP in one change: perhaps a rename, never guessed.
    bed.ho()
        .await
        .batch_execute(
            "BEGIN;
             ALTER TABLE public.items DROP COLUMN qty;
             ALTER TABLE public.items ADD COLUMN quantity int;
             COMMIT;
             UPDATE public.items SET quantity = 7 WHERE id = 1;
             INSERT INTO public.items VALUES (4, 'four', 4);",
        )
        .await
        .unwrap();
    held_at_both(&bed).await;
    // Nothing of the packet was applied; the sites say why, as SQL.
    let site = bed.site(0).await;
    assert_eq!(count(&site, "SELECT count(*) FROM public.items").await, 3);
    assert_eq!(
        count(
            &site,
            &format!("SELECT count(*) FROM ({COLUMNS}) c WHERE attname = 'qty'")
        )
        .await,
        1
    );
    assert_eq!(site_state(&bed, "s1").await, "Held: schema change");
    let here = json(&bed, 0, &["schema", "show", "--pos"]).await;
    let sql = here["held"][0]["sql"].as_str().unwrap();
    assert!(sql.contains("DROP COLUMN \"qty\""), "{sql}");
    // doctor names it with the SQL.
    let out = bed.run(0, &["doctor", "--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let held: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "sites" && f["severity"] == "error")
        .filter(|f| {
            f["message"]
                .as_str()
                .unwrap()
                .contains("DROP COLUMN \"qty\"")
        })
        .collect();
    assert_eq!(held.len(), 2, "{report}");
    assert!(
        sql.contains("ADD COLUMN IF NOT EXISTS \"quantity\" integer"),
        "{sql}"
    );
    let at_ho = json(&bed, 0, &["schema", "show"]).await;
    let sites: Vec<&str> = at_ho["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["site"].as_str().unwrap())
        .collect();
    assert_eq!(sites, ["s1", "s2"]);

    // s1 applies the held change with relaysync, s2's DBA by hand.
    let applied = json(&bed, 0, &["schema", "apply"]).await;
    assert_eq!(applied["statements"].as_array().unwrap().len(), 1);
    bed.site(1)
        .await
        .batch_execute("ALTER TABLE public.items DROP COLUMN qty, ADD COLUMN quantity integer")
        .await
        .unwrap();
    converges(&bed).await;
    assert_eq!(site_state(&bed, "s2").await, "Success");
    assert!(json(&bed, 0, &["schema", "show"]).await["held"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// A narrowing is held at every site, and HO approves it for all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_column_is_held_until_ho_approves_it() {
    let bed = items_bed("schema_narrow").await;
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.items ALTER COLUMN name TYPE varchar(5);
             UPDATE public.items SET qty = 9 WHERE id = 1;",
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    for site in 0..2 {
        assert!(!bed
            .run(site, &["pos", "sync", "--once"])
            .await
            .status
            .success());
    }
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let here = json(&bed, 0, &["schema", "show", "--pos"]).await;
    let sql = here["held"][0]["sql"].as_str().unwrap();
    assert!(
        sql.contains("ALTER COLUMN \"name\" TYPE character varying(5)"),
        "{sql}"
    );
    assert_eq!(site_state(&bed, "s1").await, "Held: schema change");
    // HO approves: each site makes its own held change on its next sync.
    let approved = json(&bed, 0, &["schema", "apply", "--all"]).await;
    assert_eq!(approved["held"].as_array().unwrap().len(), 2);
    converges(&bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_with_no_write_after_it_reaches_the_sites_and_a_no_op_sends_nothing() {
    let bed = items_bed("schema_no_dml").await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "ALTER TABLE public.items ADD COLUMN price numeric(10,2) NOT NULL DEFAULT 9.50;
         ALTER TABLE public.items ALTER COLUMN name DROP NOT NULL;",
    )
    .await
    .unwrap();
    converges(&bed).await;
    // A change of nothing the sites hold: no packet.
    let relay = bed.relay().await;
    let packets = "SELECT count(*) FROM relay.packets";
    let before = count(&relay, packets).await;
    ho.batch_execute(
        "ALTER TABLE public.items ALTER COLUMN qty SET STATISTICS 200;
         COMMENT ON TABLE public.items IS 'stock items';",
    )
    .await
    .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(count(&relay, packets).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_with_a_volatile_default_reloads_the_table_at_every_site() {
    let bed = items_bed("schema_volatile").await;
    // Each row gets its own value, written by PostgreSQL, not in the stream.
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.items ADD COLUMN token double precision DEFAULT random();
             UPDATE public.items SET qty = 10 WHERE id = 1;",
        )
        .await
        .unwrap();
    converges(&bed).await;
    let relay = bed.relay().await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.sync_requests WHERE reason = 'schema' AND served_at IS NOT NULL"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_killed_while_applying_a_schema_change_converges() {
    let bed = items_bed("schema_crash").await;
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.items ADD COLUMN note text DEFAULT 'none';
             INSERT INTO public.items VALUES (4, 'four', 4, 'new');",
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.run_killed_at(0, &["pos", "sync", "--once"], "pos_mid_apply")
        .await;
    // Killed inside the transaction: no column, no row.
    let site = bed.site(0).await;
    assert_eq!(
        count(
            &site,
            &format!("SELECT count(*) FROM ({COLUMNS}) c WHERE attname = 'note'")
        )
        .await,
        0
    );
    converges(&bed).await;
}

/// pagila's payments (`../shared/pagila`): a table partitioned by month,
/// January to July 2022, its key's sequence made apart.
fn payment() -> String {
    let mut starts = vec![
        "CREATE SEQUENCE public.payment_payment_id_seq".to_string(),
        "CREATE TABLE public.payment (".to_string(),
    ];
    for m in 1..=7 {
        starts.push(format!("CREATE TABLE public.payment_p2022_0{m} ("));
        starts.push(format!(
            "ALTER TABLE ONLY public.payment ATTACH PARTITION public.payment_p2022_0{m} "
        ));
    }
    let starts: Vec<&str> = starts.iter().map(String::as_str).collect();
    pagila(&starts)
}

/// A payment at HO on `at`.
fn pay(at: &str) -> String {
    format!(
        "INSERT INTO public.payment (customer_id, staff_id, rental_id, amount, payment_date)
         VALUES (1 + (random() * 500)::int, 1 + (random() * 1)::int, 1, 4.99, '{at}')"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_monthly_partition_reaches_the_sites_under_load_one_of_them_offline() {
    let bed = Bed::new(
        "schema_partition",
        &payment(),
        &[("public.payment", "all")],
        "",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.payment (customer_id, staff_id, rental_id, amount, payment_date)
         SELECT i, 1 + i % 2, i, (i % 10) + 0.99, '2022-01-01'::timestamptz + i * interval '1 hour'
           FROM generate_series(1, 2000) i",
    )
    .await
    .unwrap();
    bed.setup().await;

    // Payments keep coming into July while August is made and paid into
    // at once, in the same transaction.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), bed.ho_url.clone());
        tokio::spawn(async move {
            let ho = client(&url).await;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ho.batch_execute(&pay("2022-07-15")).await.unwrap();
                n += 1;
            }
            n
        })
    };
    // The root sends whole old rows: the new partition must as well.
    ho.batch_execute("ALTER TABLE public.payment REPLICA IDENTITY FULL")
        .await
        .unwrap();
    ho.batch_execute(&format!(
        "BEGIN;
         CREATE TABLE public.payment_p2022_08 PARTITION OF public.payment
           FOR VALUES FROM ('2022-08-01 00:00:00+00') TO ('2022-09-01 00:00:00+00');
         {};
         COMMIT;
         {};",
        pay("2022-08-02"),
        pay("2022-08-20")
    ))
    .await
    .unwrap();
    // s1 follows the change while s2 is offline.
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    ho.batch_execute(&pay("2022-08-21")).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);

    bed.sync_all().await;
    let payments = "SELECT p::text FROM public.payment p";
    let parts = "SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid)
                   FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
                  WHERE i.inhparent = 'public.payment'::regclass";
    for site in 0..2 {
        assert_same(&bed, site, payments, payments).await;
        assert_same(&bed, site, parts, parts).await;
    }
    assert_all_processed(&bed).await;
    let full =
        "SELECT relreplident::text FROM pg_class WHERE oid = 'public.payment_p2022_08'::regclass";
    assert_eq!(rows(&ho, full).await, ["(f)".to_string()].into());
    verified_equal(&bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_config_is_made_and_synced_at_the_sites() {
    let bed = items_bed("schema_new_table").await;
    // Tables at HO only, one in a schema the sites lack.
    bed.ho()
        .await
        .batch_execute(
            "CREATE TABLE public.stores (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                         name varchar(30) NOT NULL, opened date DEFAULT '2020-01-01');
             INSERT INTO public.stores (name, opened) VALUES ('north', '2020-01-01'), ('south', NULL);
             CREATE SCHEMA shop;
             CREATE TABLE shop.tills (store int, till int, label text, PRIMARY KEY (store, till));
             INSERT INTO shop.tills VALUES (1, 1, 'front'), (1, 2, NULL), (2, 1, 'back');",
        )
        .await
        .unwrap();
    bed.write_config(
        &[
            ("public.items", "all"),
            ("public.stores", "all"),
            ("shop.tills", "all"),
        ],
        "",
    );
    bed.ok(0, &["setup", "ho"]).await;
    // Checking the site does not ask for the tables it will be given.
    bed.ok(1, &["setup", "pos"]).await;
    bed.sync_all().await;
    let columns = |t: &str| {
        format!(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
              WHERE attrelid = '{t}'::regclass AND attnum > 0 AND NOT attisdropped"
        )
    };
    let key = |t: &str| {
        format!(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{t}'::regclass AND i.indisprimary"
        )
    };
    for site in 0..2 {
        for t in ["public.stores", "shop.tills"] {
            let rows = format!("SELECT t::text FROM {t} t");
            assert_same(&bed, site, &rows, &rows).await;
            assert_same(&bed, site, &columns(t), &columns(t)).await;
            assert_same(&bed, site, &key(t), &key(t)).await;
        }
    }
    // The site's own rows get a key and HO's default.
    let made = "SELECT attname, attidentity <> '', pg_get_expr(d.adbin, d.adrelid)
                  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = 'public.stores'::regclass AND a.attnum > 0";
    assert_same(&bed, 0, made, made).await;
    // Then its changes follow as deltas.
    bed.ho()
        .await
        .batch_execute("UPDATE shop.tills SET label = 'side' WHERE till = 2")
        .await
        .unwrap();
    bed.sync_all().await;
    let rows = "SELECT t::text FROM shop.tills t";
    assert_same(&bed, 1, rows, rows).await;
    assert_all_processed(&bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_policy_is_hold_or_ignore_does_as_it_says() {
    let bed = items_bed("schema_policy").await;
    let change = "ALTER TABLE public.items ADD COLUMN note text;
                  UPDATE public.items SET note = 'noted' WHERE id = 1;
                  INSERT INTO public.items VALUES (4, 'four', 4, 'new');";
    // s2 holds every change: even an added column waits for its DBA.
    bed.env
        .lock()
        .unwrap()
        .push((Some(1), "RELAYSYNC__SYNC__SCHEMA".into(), "hold".into()));
    bed.ho().await.batch_execute(change).await.unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert!(!bed
        .run(1, &["pos", "sync", "--once"])
        .await
        .status
        .success());
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(site_state(&bed, "s2").await, "Held: schema change");
    let here = json(&bed, 1, &["schema", "show", "--pos"]).await;
    let sql = here["held"][0]["sql"].as_str().unwrap();
    assert!(
        sql.contains("ADD COLUMN IF NOT EXISTS \"note\" text"),
        "{sql}"
    );
    json(&bed, 1, &["schema", "apply"]).await;
    converges(&bed).await;

    // Now s2 keeps its own columns: HO's next one is left out there.
    bed.env.lock().unwrap().pop();
    bed.env
        .lock()
        .unwrap()
        .push((Some(1), "RELAYSYNC__SYNC__SCHEMA".into(), "ignore".into()));
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.items ADD COLUMN price numeric(10,2) DEFAULT 1.50;
             UPDATE public.items SET price = 2.50, qty = 40 WHERE id = 4;
             INSERT INTO public.items VALUES (5, 'five', 5, NULL, 3.50);",
        )
        .await
        .unwrap();
    bed.sync_all().await;
    assert_like_ho(&bed, 0).await;
    let kept = "SELECT id, name, qty, note FROM public.items";
    assert_same(&bed, 1, kept, kept).await;
    let site = bed.site(1).await;
    assert_eq!(
        count(
            &site,
            &format!("SELECT count(*) FROM ({COLUMNS}) c WHERE attname = 'price'")
        )
        .await,
        0
    );
    assert_all_processed(&bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_role_that_may_not_alter_its_tables_holds_the_change_with_its_sql() {
    let bed = items_bed("schema_role").await;
    // s2's worker runs as a role that writes the synced table but does not
    // own it, as sql/roles.sql makes it without the ownership lines.
    let role = format!("{}_pos", bed.name);
    let site = bed.site(1).await;
    site.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT TEMPORARY ON DATABASE {db} TO {role};
         GRANT USAGE ON SCHEMA public, relaysync TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA relaysync TO {role};
         GRANT SET ON PARAMETER session_replication_role TO {role};",
        db = bed.name
    ))
    .await
    .unwrap();
    let as_role = bed.site_urls[1].replacen("postgres@", &format!("{role}@"), 1);
    bed.env
        .lock()
        .unwrap()
        .push((Some(1), "RELAYSYNC__POS__URL".into(), as_role));
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.items ADD COLUMN note text;
             UPDATE public.items SET note = 'noted' WHERE id = 2;",
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert!(!bed
        .run(1, &["pos", "sync", "--once"])
        .await
        .status
        .success());
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(site_state(&bed, "s2").await, "Held: schema change");
    let here = json(&bed, 1, &["schema", "show", "--pos"]).await;
    let sql = here["held"][0]["sql"].as_str().unwrap().to_string();
    assert!(
        sql.contains("ADD COLUMN IF NOT EXISTS \"note\" text"),
        "{sql}"
    );
    // The DBA runs it as the owner; the worker goes on.
    site.batch_execute(&sql).await.unwrap();
    converges(&bed).await;
}
