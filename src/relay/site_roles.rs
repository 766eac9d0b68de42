//! Registering and removing sites, each with a relay role of its own: a
//! member of `relaysync_site`, which the relay's row-level security policies
//! (migration V4) confine to that site's packets, parts, acks, requests and
//! capture position.

use super::{get, Relay};
use crate::error::{DbContext, Error, Result};
use crate::postgres::{ident, literal};
use crate::protocol::sql::*;
use crate::protocol::SyncReason;

/// The group role every site role is a member of.
pub const SITE_GROUP: &str = "relaysync_site";

/// The relay role a site reaches the relay with.
#[derive(Clone)]
pub enum SiteRole {
    /// `site add` creates a login role with this name and password.
    Create { name: String, password: String },
    /// A role the DBA made: `site add` makes it a member of `relaysync_site`.
    Bind(String),
}

impl std::fmt::Debug for SiteRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteRole::Create { name, .. } => write!(f, "Create({name}, password: <redacted>)"),
            SiteRole::Bind(name) => write!(f, "Bind({name})"),
        }
    }
}

impl SiteRole {
    /// The role's name.
    pub fn name(&self) -> &str {
        match self {
            SiteRole::Create { name, .. } | SiteRole::Bind(name) => name,
        }
    }
}

/// The role `site add CODE` creates: `relaysync_site_<code>`, lowercase, with
/// every character but letters and digits mapped to `_`.
pub fn role_name(code: &str) -> Result<String> {
    let name: String = format!("{SITE_GROUP}_{code}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.len() > 63 {
        return Err(Error::Config(format!(
            "site code '{code}' is too long for a role name; create a role and pass it with `--role NAME`"
        )));
    }
    Ok(name)
}

/// Whether this session's role may create roles (CREATEROLE, or a
/// superuser), and its name.
pub(super) async fn may_create_roles(client: &tokio_postgres::Client) -> Result<(bool, String)> {
    let row = client
        .query_one(
            "SELECT rolcreaterole OR rolsuper AS may, rolname::text AS me FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .ctx(|| "reading the relay owner's role".into())?;
    Ok((get(&row, "may", "pg_roles")?, get(&row, "me", "pg_roles")?))
}

/// A role name for site `code`, whose code maps to `taken`, another site's
/// role: `taken` with a suffix from the code's exact characters, so that
/// every code that maps to `taken` is advised a role of its own.
/// A secret passed as a statement parameter: its debug form (what the
/// client logs of parameters) hides it.
struct Hidden<'a>(&'a str);

impl std::fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"(hidden)\"")
    }
}

impl tokio_postgres::types::ToSql for Hidden<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

fn own_role_name(taken: &str, code: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(code.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut base = taken.to_string();
    base.truncate(63 - 1 - suffix.len());
    format!("{base}_{suffix}")
}

/// What `add_site` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Registered, with its first full sync asked for.
    New,
    /// Registered before without a role: the role is bound now.
    RoleBound,
    /// Registered already with a role: nothing changed.
    Already,
}

impl Relay {
    /// Registers site `code` with its relay role (created or bound) and asks
    /// for its first full sync, in one transaction.
    pub async fn add_site(&self, code: &str, role: &SiteRole) -> Result<Added> {
        let tx = self.transaction().await?;
        let added = self.add_site_in_txn(code, role).await?;
        tx.commit(None).await?;
        Ok(added)
    }

    async fn add_site_in_txn(&self, code: &str, role: &SiteRole) -> Result<Added> {
        let ctx = || "registering the site".to_string();
        let existing = self
            .client
            .query_opt("SELECT role FROM relay.sites WHERE code = $1", &[&code])
            .await
            .ctx(ctx)?;
        let existing: Option<Option<String>> = match &existing {
            Some(r) => Some(get(r, "role", "relay.sites")?),
            None => None,
        };
        if let Some(Some(_)) = existing {
            return Ok(Added::Already);
        }
        self.check_role(code, role).await?;
        let name = role.name();
        let give = || format!("giving site '{code}' its relay role {name}");
        match role {
            SiteRole::Create { password, .. } => {
                // The verifier goes as a parameter whose debug form hides
                // it, read back by the statement that creates the role: no
                // log line (the client's, at debug, shows each statement and
                // parameter) holds it.
                let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
                self.client
                    .execute(
                        "SELECT set_config('relaysync.new_role_verifier', $1, true)",
                        &[&Hidden(&verifier)],
                    )
                    .await
                    .ctx(give)?;
                let create = format!(
                    "DO $$ BEGIN
                       EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', {r}, current_setting('relaysync.new_role_verifier'), {g});
                     END $$;
                     SELECT set_config('relaysync.new_role_verifier', '', true)",
                    r = literal(name),
                    g = literal(SITE_GROUP),
                );
                self.client.batch_execute(&create).await.ctx(give)?;
            }
            SiteRole::Bind(_) => {
                let grant = format!("GRANT {SITE_GROUP} TO {}", ident(name));
                self.client.batch_execute(&grant).await.ctx(give)?;
            }
        }
        let created = matches!(role, SiteRole::Create { .. });
        if existing.is_some() {
            self.client
                .execute(
                    "UPDATE relay.sites SET role = $2, role_created = $3 WHERE code = $1",
                    &[&code, &name, &created],
                )
                .await
                .ctx(ctx)?;
            return Ok(Added::RoleBound);
        }
        self.lock_down_ids().await?;
        self.client
            .execute(
                "WITH added AS (INSERT INTO relay.sites (code, role, role_created, first_packet)
                                VALUES ($1, $3, $4, relay.last_packet_id()) RETURNING code)
                 INSERT INTO relay.sync_requests (site, reason) SELECT code, $2 FROM added",
                &[&code, &SyncReason::First, &name, &created],
            )
            .await
            .ctx(ctx)?;
        Ok(Added::New)
    }

    /// Fails with the fix when `role` cannot serve as site `code`'s role.
    async fn check_role(&self, code: &str, role: &SiteRole) -> Result<()> {
        let name = role.name();
        let row = self
            .client
            .query_opt(
                "SELECT r.rolsuper OR r.rolbypassrls AS unconfined, r.rolname = current_user AS is_owner,
                        (SELECT s.code FROM relay.sites s WHERE s.role = r.rolname) AS bound_to
                   FROM pg_roles r WHERE r.rolname = $1",
                &[&name],
            )
            .await
            .ctx(|| "looking up the site's relay role".into())?;
        match (role, row) {
            (SiteRole::Create { .. }, Some(r)) => {
                let bound_to: Option<String> = get(&r, "bound_to", "relay.sites")?;
                Err(Error::Setup(match bound_to {
                    // Codes that differ in case or punctuation only map to
                    // one role name.
                    Some(other) => {
                        let own = own_role_name(name, code);
                        format!(
                            "site code '{code}' maps to role {name}, which is site '{other}''s relay role already; give this site a role of its own: CREATE ROLE {own} LOGIN PASSWORD '…', then `relaysync site add {code} --role {own}`"
                        )
                    }
                    None => format!(
                        "role {name} exists already; bind it with `relaysync site add {code} --role {name}`, or drop it"
                    ),
                }))
            }
            (SiteRole::Create { .. }, None) => self.require_createrole(code, name).await,
            (SiteRole::Bind(_), None) => Err(Error::Setup(format!(
                "role {name} does not exist; create it (CREATE ROLE {name} LOGIN PASSWORD …) or leave out --role"
            ))),
            (SiteRole::Bind(_), Some(r)) => {
                let unconfined: bool = get(&r, "unconfined", "pg_roles")?;
                let is_owner: bool = get(&r, "is_owner", "pg_roles")?;
                let bound_to: Option<String> = get(&r, "bound_to", "relay.sites")?;
                if unconfined || is_owner {
                    return Err(Error::Setup(format!(
                        "role {name} is a superuser, bypasses row-level security or owns the relay; give the site a role of its own"
                    )));
                }
                match bound_to {
                    Some(other) => Err(Error::Setup(format!(
                        "role {name} is site '{other}''s relay role already; give each site a role of its own"
                    ))),
                    None => Ok(()),
                }
            }
        }
    }

    /// Fails with the fix unless the relay's owner may create site `code`'s
    /// role `name`.
    async fn require_createrole(&self, code: &str, name: &str) -> Result<()> {
        let (may, me) = may_create_roles(&self.client).await?;
        if may {
            return Ok(());
        }
        Err(Error::Setup(format!(
            "the relay's owner {me} may not create roles, which site add needs to make {name}; as a superuser run: `ALTER ROLE {} CREATEROLE`, or create the role yourself and bind it with `relaysync site add {code} --role NAME`",
            ident(&me)
        )))
    }

    /// Removes site `code`: its pending work (it leaves the targets of every
    /// down packet; parts for it alone and packets for nobody else go), its
    /// acks and requests, and its role (dropped if `site add` made it, else
    /// no longer a member of `relaysync_site`). False when it was not
    /// registered.
    pub async fn remove_site(&self, code: &str) -> Result<bool> {
        let tx = self.transaction().await?;
        let removed = self.remove_site_in_txn(code).await?;
        tx.commit(None).await?;
        Ok(removed)
    }

    async fn remove_site_in_txn(&self, code: &str) -> Result<bool> {
        let row = self
            .client
            .query_opt(
                "DELETE FROM relay.sites WHERE code = $1 RETURNING role, role_created, first_packet, expired_at IS NOT NULL AS expired",
                &[&code],
            )
            .await
            .ctx(|| "removing the site".into())?;
        let Some(row) = row else { return Ok(false) };
        let role: Option<String> = get(&row, "role", "relay.sites")?;
        let created: bool = get(&row, "role_created", "relay.sites")?;
        let first: i64 = get(&row, "first_packet", "relay.sites")?;
        let expired: bool = get(&row, "expired", "relay.sites")?;
        let ids = self.leave_packets(code, first, expired).await?;
        self.forget(code, &ids).await?;
        if let Some(role) = role {
            let sql = if created {
                format!("DROP ROLE {}", ident(&role))
            } else {
                format!("REVOKE {SITE_GROUP} FROM {}", ident(&role))
            };
            self.client
                .batch_execute(&sql)
                .await
                .ctx(|| format!("revoking the relay role {role}"))?;
        }
        Ok(true)
    }

    /// Site `code` (registered after packet `first`; `expired` if expiry
    /// counted it out already) leaves the targets of the down packets;
    /// returns the packets it left.
    async fn leave_packets(&self, code: &str, first: i64, expired: bool) -> Result<Vec<i64>> {
        let ctx = || "removing the site's pending packets".to_string();
        let ids: Vec<i64> = self
            .client
            .query(
                &format!(
                    "UPDATE relay.packets SET targets = array_remove(targets, $1)
                  WHERE direction = {DOWN} AND $1 = ANY (targets)
                  RETURNING id"
                ),
                &[&code],
            )
            .await
            .ctx(ctx)?
            .iter()
            .map(|r| get(r, "id", "relay.packets"))
            .collect::<Result<_>>()?;
        // It leaves the `*` packets it counts in: those it acked (its acks
        // go), and, unless expiry counted it out of them, those after it
        // joined that it has not acked.
        let all: Vec<i64> = self
            .client
            .query(
                &format!("UPDATE relay.packets p SET target_count = p.target_count - 1
                  WHERE p.direction = {DOWN} AND p.targets = {ALL_ARRAY}
                    AND (EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $1)
                         OR (NOT $3 AND p.id > $2
                             AND NOT EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $1)))
                  RETURNING p.id"),
                &[&code, &first, &expired],
            )
            .await
            .ctx(ctx)?
            .iter()
            .map(|r| get(r, "id", "relay.packets"))
            .collect::<Result<_>>()?;
        let mut ids = ids;
        ids.extend(all);
        Ok(ids)
    }

    /// Site `code`'s parts of the packets `ids`, its acks, and the packets
    /// left for nobody go; the rest settle without it.
    async fn forget(&self, code: &str, ids: &[i64]) -> Result<()> {
        let ctx = || "removing the site's pending packets".to_string();
        // One statement each: a statement does not see its own changes.
        let code: &(dyn tokio_postgres::types::ToSql + Sync) = &code;
        let ids: &(dyn tokio_postgres::types::ToSql + Sync) = &ids;
        for (statement, params) in [
            (
                "DELETE FROM relay.packet_parts WHERE target = $1 AND packet_id = ANY ($2)",
                &[code, ids][..],
            ),
            ("DELETE FROM relay.acks WHERE site = $1", &[code][..]),
            ("SELECT relay.settle($1)", &[ids][..]),
            (
                &format!(
                    "DELETE FROM relay.packets WHERE id = ANY ($1)
                   AND (cardinality(targets) = 0 OR (targets = {ALL_ARRAY} AND target_count <= 0))"
                ),
                &[ids][..],
            ),
        ] {
            self.client.execute(statement, params).await.ctx(ctx)?;
        }
        Ok(())
    }
}
