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
