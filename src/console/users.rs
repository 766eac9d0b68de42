//! The console's users: a JSON file of names, roles and Argon2id hashes
//! (`[console] users`), written by `relaysync console user add`, read at
//! each login (a user added or removed counts without a restart).

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees every page; triggers nothing.
    Viewer,
    /// Also asks for syncs, resyncs and verifies (each recorded in the
    /// audit log).
    Operator,
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            _ => Err(Error::Config(format!(
                "--role {s}: write viewer (sees every page) or operator (may also trigger syncs)"
            ))),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserEntry {
    name: String,
    role: Role,
    /// Argon2id in PHC form (`$argon2id$v=19$…`).
    hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    users: Vec<UserEntry>,
}

/// The users file at a path.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
}

/// A user added to the file.
#[derive(Debug, Clone, Serialize)]
pub struct UserAdded {
    pub name: String,
    pub role: Role,
    pub file: PathBuf,
    /// Whether an earlier entry of that name was replaced.
    pub replaced: bool,
}

impl Users {
    pub fn new(path: impl Into<PathBuf>) -> Users {
        Users { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<UsersFile> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Config(format!(
                    "console users file {}: {e}; it is written by `relaysync console user add`",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
            Err(e) => Err(Error::Config(format!(
                "reading console users file {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// How many users the file holds (0 when it does not exist).
    pub fn count(&self) -> Result<usize> {
        Ok(self.read()?.users.len())
    }

    /// Adds `name` (or replaces its password and role), hashing `password`
    /// with Argon2id; the file is written whole, mode 0600, then renamed
    /// into place.
    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<UserAdded> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(Error::Config(format!(
                "console user name {name:?}: use letters, digits and - _ . @"
            )));
        }
        if password.chars().count() < 12 {
            return Err(Error::Config(
                "a console password needs at least 12 characters; put it in a file and pass --password-file FILE".into(),
            ));
        }
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Error::Config("the system's random source failed".into()))?;
        let salt = SaltString::encode_b64(&bytes)
            .map_err(|e| Error::Config(format!("making a salt: {e}")))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| Error::Config(format!("hashing the password: {e}")))?
            .to_string();
        let mut file = self.read()?;
        let before = file.users.len();
        file.users.retain(|u| u.name != name);
        let replaced = file.users.len() != before;
        file.users.push(UserEntry {
            name: name.to_string(),
            role,
            hash,
        });
        self.write(&file)?;
        Ok(UserAdded {
            name: name.to_string(),
            role,
            file: self.path.clone(),
            replaced,
        })
    }

    /// Removes `name`; whether it was there.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let mut file = self.read()?;
        let before = file.users.len();
        file.users.retain(|u| u.name != name);
        if file.users.len() == before {
            return Ok(false);
        }
        self.write(&file)?;
        Ok(true)
    }

    fn write(&self, file: &UsersFile) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| {
            Error::Config(format!(
                "writing console users file {}: {e}",
                self.path.display()
            ))
        };
        let tmp = self.path.with_extension("tmp");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let json = serde_json::to_vec_pretty(file).expect("users serialize");
        out.write_all(&json).map_err(io)?;
        out.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// The role of `name` when `password` is its password; None otherwise
    /// (an unknown name costs the same hash as a wrong password).
    pub fn check(&self, name: &str, password: &str) -> Result<Option<Role>> {
        let file = self.read()?;
        let user = file.users.iter().find(|u| u.name == name);
        let hash = user.map_or(DECOY, |u| u.hash.as_str());
        let parsed = PasswordHash::new(hash).map_err(|e| {
            Error::Config(format!(
                "console user {name}: bad hash in the users file: {e}"
            ))
        })?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(user.filter(|_| ok).map(|u| u.role))
    }
}

/// A hash no password matches, verified for unknown names so that a login
/// takes as long whether the name exists or not.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$N2Cv1BFKN1zrWcsI0sTlyfxH1dpXLQqPqV5aqTHH5r0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_logs_in_with_its_password_only() {
        let dir = std::env::temp_dir().join(format!("rs-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = Users::new(dir.join("users.json"));
        users
            .add("ana", Role::Operator, "correct horse battery")
            .unwrap();
        assert_eq!(
            users.check("ana", "correct horse battery").unwrap(),
            Some(Role::Operator)
        );
        assert_eq!(users.check("ana", "wrong horse battery").unwrap(), None);
        assert_eq!(users.check("bob", "correct horse battery").unwrap(), None);
        let text = std::fs::read_to_string(users.path()).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("correct horse"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(users.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(users.add("ana", Role::Viewer, "short").is_err());
        assert!(
            users
                .add("ana", Role::Viewer, "another long password")
                .unwrap()
                .replaced
        );
        assert_eq!(
            users.check("ana", "another long password").unwrap(),
            Some(Role::Viewer)
        );
        assert!(users.remove("ana").unwrap());
        assert_eq!(users.check("ana", "another long password").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
