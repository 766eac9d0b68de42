//! The throwaway clusters of the demo and the benchmark: HO, relay and
//! sites, TLS only, each site with its own relay role.

use relaysync::config::{
    Config, Deletes, HoConfig, Merge, PosConfig, RelayConfig, TableConfig, UpstreamConfig,
};
use relaysync::error::Result;
use relaysync_cluster::Cluster;

use super::{cluster_error, run_sql, site_code};

/// The clusters of a demo or benchmark: HO, relay and sites.
pub struct Clusters {
    pub ho: Cluster,
    pub relay: Cluster,
    pub sites: Vec<Cluster>,
    /// Each site's relay role and its password.
    pub site_roles: Vec<(String, String)>,
    /// The password of `postgres` at each cluster and of the relay's owner.
    pub password: String,
    /// Where HO's and each site's signing keys are (`keys generate`).
    pub keys: std::path::PathBuf,
}

impl Drop for Clusters {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.keys);
    }
}

/// The relay's owner, as `sql/roles.sql` makes it.
const RELAY_OWNER: &str = "relaysync_relay";

impl Clusters {
    /// Starts HO, relay and `sites` site clusters, each with its database,
    /// taking TCP connections only over TLS (a throwaway CA each) with a
    /// password.
    pub async fn start(sites: usize) -> Result<Clusters> {
        let password = crate::cli::site::generate_password()?;
        let clusters = tokio::task::spawn_blocking(move || -> relaysync_cluster::Result<_> {
            Ok(Clusters {
                ho: Cluster::start_tls("ho", &[])?,
                relay: Cluster::start_tls("relay", &[])?,
                sites: (0..sites)
                    .map(|i| Cluster::start_tls(&format!("site{i}"), &[]))
                    .collect::<relaysync_cluster::Result<_>>()?,
                site_roles: Vec::new(),
                password,
                keys: std::env::temp_dir()
                    .join(format!("relaysync-demo-keys-{}", std::process::id())),
            })
        })
        .await
        .expect("cluster start does not panic")
        .map_err(cluster_error)?;
        let mut clusters = clusters;
        std::fs::create_dir_all(&clusters.keys).map_err(|source| relaysync::Error::Io {
            context: format!("creating {}", clusters.keys.display()),
            source,
        })?;
        for who in std::iter::once("ho".to_string()).chain((0..sites).map(site_code)) {
            relaysync::seal::generate(&clusters.key(&who), true)?;
        }
        for i in 0..sites {
            let role = relaysync::relay::role_name(&site_code(i))?;
            clusters
                .site_roles
                .push((role, crate::cli::site::generate_password()?));
        }
        clusters
            .ho
            .create_database("ho")
            .await
            .map_err(cluster_error)?;
        clusters
            .relay
            .create_database("relay")
            .await
            .map_err(cluster_error)?;
        for s in &clusters.sites {
            s.create_database("pos").await.map_err(cluster_error)?;
        }
        let pw = &clusters.password;
        for c in [&clusters.ho, &clusters.relay]
            .into_iter()
            .chain(&clusters.sites)
        {
            run_sql(
                &c.url("postgres"),
                &format!("ALTER ROLE postgres PASSWORD '{pw}'"),
            )
            .await?;
        }
        let owner = format!(
            "CREATE ROLE {RELAY_OWNER} LOGIN CREATEROLE PASSWORD '{pw}';
             GRANT CREATE ON DATABASE relay TO {RELAY_OWNER};"
        );
        run_sql(&clusters.relay.url("relay"), &owner).await?;
        Ok(clusters)
    }

    /// The private key of `who` (`ho` or a site code); its public key is
    /// beside it, with `.pub` added.
    pub fn key(&self, who: &str) -> std::path::PathBuf {
        self.keys.join(format!("{who}.pem"))
    }

    /// A config for site `i` (or HO's, which is the same without effect of [pos]).
    pub fn config(&self, site: usize, tables: &[(&str, &str)]) -> Config {
        Config {
            ho: Some(HoConfig {
                url: self.ho.tls_url("postgres", &self.password, "ho").into(),
                slot: "relaysync".into(),
                publication: "relaysync".into(),
                signing_key: Some(self.key("ho")),
                ..Default::default()
            }),
            relay: Some(RelayConfig {
                url: match self.site_roles.get(site) {
                    Some((role, password)) => self.relay.url_as(role, password, "relay").into(),
                    None => self
                        .relay
                        .tls_url(RELAY_OWNER, &self.password, "relay")
                        .into(),
                },
                ..Default::default()
            }),
            pos: self.sites.get(site).map(|c| PosConfig {
                site: site_code(site),
                url: c.tls_url("postgres", &self.password, "pos").into(),
                slot: "relaysync_up".into(),
                publication: "relaysync_up".into(),
                signing_key: Some(self.key(&site_code(site))),
                trust: Some(self.keys.join("ho.pem.pub")),
                ..Default::default()
            }),
            sync: Default::default(),
            packet: Default::default(),
            tables: tables
                .iter()
                .map(|(n, r)| TableConfig {
                    name: n.to_string(),
                    route: r.to_string(),
                    schema: None,
                })
                .collect(),
            upstream: vec![
                UpstreamConfig {
                    name: "public.device_events".into(),
                    merge: Merge::Append,
                    deletes: Deletes::Ignore,
                },
                UpstreamConfig {
                    name: "public.users".into(),
                    merge: Merge::FillVacant,
                    deletes: Deletes::Ignore,
                },
            ],
            metrics: Default::default(),
            retention: Default::default(),
            network: Default::default(),
            console: Default::default(),
        }
    }
}
