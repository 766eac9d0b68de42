//! `site add|remove|list`.

use relaysync::config::{check_site_code, Config};
use relaysync::error::{Error, Result};
use relaysync::postgres::read_password_file;
use relaysync::relay::{role_name, Added, Relay, SiteRole};
use relaysync::seal::PublicKey;

use super::SiteCommand;

/// Registers, removes or lists sites.
pub async fn run(cfg: &Config, command: SiteCommand) -> Result<()> {
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    match command {
        SiteCommand::Add {
            code,
            role,
            password_file,
            public_key,
        } => {
            check_site_code(&code)?;
            // Read first: a bad key file registers nothing.
            let key = match &public_key {
                Some(file) => Some(one_key(file)?),
                None => None,
            };
            let (role, shown) = match (role, password_file) {
                (Some(name), _) => (SiteRole::Bind(name), None),
                (None, Some(file)) => {
                    let password = read_password_file("--password-file", &file)?;
                    (create(&code, password)?, None)
                }
                (None, None) => {
                    let password = generate_password()?;
                    (create(&code, password.clone())?, Some(password))
                }
            };
            match relay.add_site(&code, &role).await? {
                Added::New => println!(
                    "site {code} registered with relay role {}; its first sync will be a full sync",
                    role.name()
                ),
                Added::RoleBound => {
                    println!("site {code} now reaches the relay as {}", role.name())
                }
                Added::Already => {
                    println!("site {code} was registered already");
                    return Ok(());
                }
            }
            if let Some(password) = shown {
                println!("password of {} (shown once): {password}", role.name());
            }
            if let Some(key) = key {
                record_key(cfg, &code, &key).await?;
            }
        }
        SiteCommand::Key {
            code,
            public_key,
            revoke,
        } => {
            check_site_code(&code)?;
            if let Some(id) = revoke {
                let sql = ho_client(cfg).await?;
                relaysync::service::revoke_site_key(&sql, &code, &id).await?;
                println!("key {id} of site {code} revoked: HO refuses the uploads it signs");
            } else if let Some(file) = public_key {
                record_key(cfg, &code, &one_key(&file)?).await?;
            }
        }
        SiteCommand::Remove { code } => {
            if relay.remove_site(&code).await? {
                println!("site {code} removed with its pending packets and relay role");
            } else {
                println!("site {code} was not registered");
            }
        }
        SiteCommand::List => {
            for s in relay.sites().await? {
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// The one public key in `file`.
fn one_key(file: &std::path::Path) -> Result<PublicKey> {
    let mut keys = PublicKey::load_all("--public-key", file)?;
    if keys.len() > 1 {
        return Err(Error::Config(format!(
            "--public-key {} holds {} keys; give one site key per command",
            file.display(),
            keys.len()
        )));
    }
    Ok(keys.remove(0))
}

/// HO's database (for its record of the sites' keys).
async fn ho_client(cfg: &Config) -> Result<tokio_postgres::Client> {
    let ho = cfg.ho().map_err(|_| {
        Error::Config(
            "a site's public key is kept in HO's database: run this with a config that has [ho] url".into(),
        )
    })?;
    relaysync::postgres::connect("ho", &ho.url).await
}

/// Records `key` as site `code`'s at HO.
async fn record_key(cfg: &Config, code: &str, key: &PublicKey) -> Result<()> {
    let sql = ho_client(cfg).await?;
    let recorded = relaysync::service::record_site_key(&sql, code, key).await?;
    if recorded.new {
        println!("key {} recorded for site {code}", key.id());
    } else {
        println!("key {} of site {code} was recorded already", key.id());
    }
    Ok(())
}

fn create(code: &str, password: String) -> Result<SiteRole> {
    Ok(SiteRole::Create {
        name: role_name(code)?,
        password,
    })
}

/// 32 random letters and digits (190 bits) from the system's generator.
pub fn generate_password() -> Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(32);
    let mut urandom = std::fs::File::open("/dev/urandom").map_err(|source| Error::Io {
        context: "opening /dev/urandom".into(),
        source,
    })?;
    let mut byte = [0u8; 1];
    while password.len() < 32 {
        urandom.read_exact(&mut byte).map_err(|source| Error::Io {
            context: "reading /dev/urandom".into(),
            source,
        })?;
        // Rejection sampling: no letter is likelier than another.
        if usize::from(byte[0]) < 248 {
            password.push(char::from(ALPHABET[usize::from(byte[0]) % 62]));
        }
    }
    Ok(password)
}
