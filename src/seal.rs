//! Signed packets: the relay carries them, it does not vouch for them.
//!
//! The one packet writer seals every packet it stores with the writer's
//! Ed25519 key (HO's for down packets, a site's for its uploads): a header
//! naming the key, the packet's id and group, origin, kind, targets and
//! each part's table, target, rows and SHA-256, stored as the exact bytes
//! signed beside the signature. The side that applies the packet checks the
//! signature over those bytes with the keys it trusts (HO's public keys at
//! a site, each site's at HO) *before* applying anything, then checks the
//! packet and the parts the relay handed it against the header: another
//! id (a replay or a reordering), other targets (another site's packet),
//! a part added, missing or changed, or no signature at all is refused, and
//! the packet fails with the reason. The relay's own checksums are not
//! trusted for this: the parts are hashed afresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::Target;
use crate::relay::{PacketInfo, StoredPart};

/// What every signed message starts with: a signature made for anything
/// else (another protocol, another version) never verifies as a packet's.
const DOMAIN: &[u8] = b"relaysync packet seal v1\0";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before
/// the 32 bytes of the key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A key's id: the first 8 bytes of the SHA-256 of its public key, in hex.
pub fn key_id(public: &[u8]) -> String {
    hex(&crate::relay::checksum(public)[..8])
}

/// A private key that signs packets.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 key (`relaysync keys generate`, or
    /// `openssl genpkey -algorithm ed25519`); `setting` names the config
    /// key in errors.
    pub fn load(setting: &str, path: &Path) -> Result<SigningKey> {
        let bad = |why: String| {
            Error::Config(format!(
                "{setting} = {}: {why}; make one with `relaysync keys generate --out {}`",
                path.display(),
                path.display()
            ))
        };
        let der = PrivatePkcs8KeyDer::from_pem_file(path)
            .map_err(|e| bad(format!("no PKCS#8 private key read ({e})")))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| bad(format!("not an Ed25519 key ({e})")))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, id })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_raw(self.pair.public_key().as_ref()).expect("an Ed25519 public key")
    }

    /// Seals `header`: the exact bytes to store, and their signature.
    pub(crate) fn seal(&self, header: &Header) -> (Vec<u8>, Vec<u8>) {
        let signed = serde_json::to_vec(header).expect("a header serializes");
        let signature = self.pair.sign(&message(&signed)).as_ref().to_vec();
        (signed, signature)
    }
}

/// The message a signature covers: the domain, then the stored bytes.
fn message(signed: &[u8]) -> Vec<u8> {
    [DOMAIN, signed].concat()
}

/// A public key that packets are checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: String,
    raw: [u8; 32],
}

impl PublicKey {
    fn from_raw(raw: &[u8]) -> Option<PublicKey> {
        let raw: [u8; 32] = raw.try_into().ok()?;
        Some(PublicKey {
            id: key_id(&raw),
            raw,
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw 32 bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// From the raw 32 bytes (as HO's database keeps a site's key).
    pub fn from_bytes(raw: &[u8]) -> Result<PublicKey> {
        PublicKey::from_raw(raw)
            .ok_or_else(|| Error::Config(format!("{} bytes are no Ed25519 public key", raw.len())))
    }

    /// Every Ed25519 `PUBLIC KEY` in a PEM file (`setting` names where the
    /// path came from, in errors); at least one.
    pub fn load_all(setting: &str, path: &Path) -> Result<Vec<PublicKey>> {
        let bad = |why: String| {
            Error::Config(format!(
                "{setting} {}: {why}; it should hold one or more PUBLIC KEY blocks, as in the .pub file `relaysync keys generate` writes",
                path.display()
            ))
        };
        let text = std::fs::read(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
        let mut keys = Vec::new();
        for spki in SubjectPublicKeyInfoDer::pem_slice_iter(&text) {
            let spki = spki.map_err(|e| bad(format!("is not PEM ({e})")))?;
            let raw = spki
                .as_ref()
                .strip_prefix(&SPKI_PREFIX[..])
                .and_then(PublicKey::from_raw)
                .ok_or_else(|| bad("holds a public key that is not Ed25519".into()))?;
            keys.push(raw);
        }
        if keys.is_empty() {
            return Err(bad("holds no PUBLIC KEY".into()));
        }
        Ok(keys)
    }

    /// The key as a PEM `PUBLIC KEY` block.
    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &[&SPKI_PREFIX[..], &self.raw[..]].concat())
    }

    fn verifies(&self, signed: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(&message(signed), signature)
            .is_ok()
    }
}

/// `der` as a PEM block of `label`.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new key pair: the private key at `out` (PKCS#8 PEM, mode 0600, not
/// overwritten unless `force`) and the public key at `out.pub`.
pub fn generate(out: &Path, force: bool) -> Result<Generated> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    if !force && public_path.exists() {
        return Err(Error::Config(format!(
            "{} exists; keep it, or pass --force to replace the pair",
            public_path.display()
        )));
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| Error::Config(format!("cannot generate a key: {e}")))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key just generated");
    let public = PublicKey::from_raw(pair.public_key().as_ref()).expect("32 bytes");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let write = |path: &Path, text: &str, options: &std::fs::OpenOptions| {
        let mut file = options.open(path).map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "; keep it, or pass --force to replace it"
            } else {
                ""
            };
            Error::Config(format!("cannot write {}: {e}{fix}", path.display()))
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
    };
    write(out, &pem("PRIVATE KEY", pkcs8.as_ref()), &options)?;
    let mut public_options = options.clone();
    public_options.mode(0o644);
    write(&public_path, &public.to_pem(), &public_options)?;
    Ok(Generated {
        id: public.id.clone(),
        private_key: out.to_path_buf(),
        public_key: public_path,
    })
}

/// What `keys generate` made.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub id: String,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
}

/// What a packet's signature covers, stored as the exact bytes signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    /// The id of the key that signed it.
    pub(crate) key: String,
    /// The packet's id in the relay and its group's.
    pub(crate) id: i64,
    pub(crate) group: i64,
    pub(crate) origin: String,
    pub(crate) kind: String,
    /// The sites it is for (`*`: every site), or `ho`.
    pub(crate) targets: Vec<String>,
    /// Milliseconds since the epoch when the writer sealed it.
    pub(crate) created_at: i64,
    pub(crate) parts: Vec<PartSeal>,
    /// Its place in the chain of each of its targets.
    pub(crate) chain: Vec<Link>,
    /// The sites whose chains start over here: a full sync of every table
    /// (first contact, back from expiry, a resync) supersedes whatever
    /// came before it, so they take this packet after a gap (never one
    /// older than what they applied).
    pub(crate) resets: Vec<String>,
    /// With `resets`: the heads of the other chains those sites follow
    /// (HO's packets for every site) when it was sealed.
    pub(crate) base: Vec<Link>,
}

/// A packet's place in the chain of one target: its number there (from 1)
/// and the SHA-256 of the previous packet's signed bytes (hex; empty for
/// the first). In `base`: the head itself (its number and hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Link {
    pub(crate) target: String,
    pub(crate) seq: i64,
    pub(crate) prev: String,
}

/// A chain: its writer (`ho`, or a site) and target (a site, `*`, `ho`).
pub(crate) type ChainKey = (String, String);

/// The last packet of a chain: its number and the SHA-256 of its signed
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: i64,
    pub(crate) hash: Vec<u8>,
}

impl Head {
    /// The link of the packet that follows this head (None: the first).
    pub(crate) fn next(head: Option<&Head>, target: &str) -> Link {
        Link {
            target: target.to_string(),
            seq: head.map_or(1, |h| h.seq + 1),
            prev: head.map_or(String::new(), |h| hex(&h.hash)),
        }
    }
}

/// The chain heads an applier holds: read from its database once, moved
/// packet by packet, written in the transaction that applies them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chains {
    heads: HashMap<ChainKey, Head>,
    /// Moved since the last [`Chains::take_moved`].
    moved: Vec<ChainKey>,
}

impl Chains {
    pub(crate) fn new(heads: Vec<(ChainKey, Head)>) -> Chains {
        Chains {
            heads: heads.into_iter().collect(),
            moved: Vec::new(),
        }
    }

    fn set(&mut self, key: ChainKey, head: Head) {
        if !self.moved.contains(&key) {
            self.moved.push(key.clone());
        }
        self.heads.insert(key, head);
    }

    /// The heads moved since the last call, to record.
    pub(crate) fn take_moved(&mut self) -> Vec<(ChainKey, Head)> {
        std::mem::take(&mut self.moved)
            .into_iter()
            .map(|k| {
                let h = self.heads[&k].clone();
                (k, h)
            })
            .collect()
    }
}

/// One part as its writer encoded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartSeal {
    pub(crate) seq: i32,
    pub(crate) table: String,
    pub(crate) target: String,
    pub(crate) rows: i64,
    /// SHA-256 of the part's bytes, in hex.
    pub(crate) sha256: String,
}

/// Hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whom the applying side trusts for the packets it applies.
#[derive(Debug, Clone, Default)]
pub(crate) enum Trust {
    /// Nobody in particular: unsigned packets are applied (and said to be).
    #[default]
    Unchecked,
    /// A site: packets signed by one of HO's keys (`[pos] trust`).
    Ho(Vec<PublicKey>),
    /// HO: each site's uploads signed by one of its keys (`site key`).
    Sites(HashMap<String, Vec<PublicKey>>),
}

/// The signing key of this side's writer and the keys its applier trusts.
#[derive(Debug, Clone, Default)]
pub struct Seals {
    pub(crate) key: Option<Arc<SigningKey>>,
    pub(crate) trust: Trust,
    /// The last number this side committed in each of its chains
    /// (origin, target): the relay's heads must never be behind them.
    written: Arc<std::sync::Mutex<HashMap<ChainKey, i64>>>,
    /// Where `written` is kept across restarts (HO's database), if it is.
    book: Option<Arc<tokio_postgres::Client>>,
}

impl Seals {
    /// Packets this side writes are signed with `key`.
    pub fn signing(mut self, key: SigningKey) -> Seals {
        self.key = Some(Arc::new(key));
        self
    }

    /// A site trusts packets signed by one of `keys` (HO's) only.
    pub fn trusting_ho(mut self, keys: Vec<PublicKey>) -> Seals {
        self.trust = Trust::Ho(keys);
        self
    }

    /// HO trusts each site's uploads signed by one of its `keys` only.
    pub fn trusting_sites(mut self, keys: HashMap<String, Vec<PublicKey>>) -> Seals {
        self.trust = Trust::Sites(keys);
        self
    }

    /// A site's: its `[pos] signing_key` and `trust`. With a signing key,
    /// the numbers its uploads took in their chain are kept in the site's
    /// database (`relaysync.chains`, origin the site), as HO keeps its own:
    /// a relay that goes back between two runs is seen too.
    pub async fn for_pos(pos: &crate::config::PosConfig) -> Result<Seals> {
        let mut seals = Seals::default();
        if let Some(path) = &pos.trust {
            seals = seals.trusting_ho(PublicKey::load_all("[pos] trust", path)?);
        }
        if let Some(path) = &pos.signing_key {
            seals = seals
                .signing(SigningKey::load("[pos] signing_key", path)?)
                .recording(&pos.site, crate::postgres::connect("pos", &pos.url).await?)
                .await?;
        }
        Ok(seals)
    }

    /// HO's: its `[ho] signing_key`, and then the sites' keys recorded in
    /// HO's database.
    pub async fn for_ho(
        ho: &crate::config::HoConfig,
        sql: &tokio_postgres::Client,
    ) -> Result<Seals> {
        match &ho.signing_key {
            Some(path) => {
                Seals::default()
                    .signing(SigningKey::load("[ho] signing_key", path)?)
                    .trusting_sites(crate::book::ho::site_keys(sql).await?)
                    .recording("ho", crate::postgres::connect("ho", &ho.url).await?)
                    .await
            }
            None => Ok(Seals::default()),
        }
    }

    /// Err naming the chain when one of the relay's `heads` of `origin`'s
    /// chains (read under the lock, for `targets`) is behind what this
    /// process committed there: the relay lost or removed packets, and the
    /// next packet would take a removed one's place unnoticed.
    pub(crate) fn went_back(
        &self,
        origin: &str,
        targets: &[&str],
        heads: &HashMap<String, Head>,
    ) -> std::result::Result<(), String> {
        let written = self.written.lock().expect("not poisoned");
        for target in targets {
            let key = (origin.to_string(), target.to_string());
            let at = heads.get(*target).map_or(0, |h| h.seq);
            if let Some(&mine) = written.get(&key).filter(|&&m| m > at) {
                return Err(format!(
                    "the relay's chain of packets from {origin} for {target} stands at number {at}, but this worker stored up to number {mine}: the relay lost or removed packets it had stored (a restore, a failover without synchronous replication, or tampering); nothing more is written to it"
                ));
            }
        }
        Ok(())
    }

    /// Records the chain numbers `moved` (target, number) of `origin` as
    /// committed to the relay.
    pub(crate) async fn committed(&self, origin: &str, moved: &[(String, Head)]) {
        {
            let mut written = self.written.lock().expect("not poisoned");
            for (target, head) in moved {
                let at = written
                    .entry((origin.to_string(), target.clone()))
                    .or_default();
                *at = (*at).max(head.seq);
            }
        }
        let Some(book) = &self.book else { return };
        let heads: Vec<(ChainKey, Head)> = moved
            .iter()
            .map(|(t, h)| ((origin.to_string(), t.clone()), h.clone()))
            .collect();
        // The relay holds the packets already: a record that lags only
        // narrows what a restart remembers.
        if let Err(e) = crate::book::chains::raise(book, &heads).await {
            tracing::warn!(error = %crate::error::chain(&e), "cannot record the chain numbers stored in relaysync.chains");
        }
    }

    /// Keeps what this side commits in `book` (its own database, holding
    /// `relaysync.chains`) and starts from what it recorded there for
    /// `origin`.
    pub(crate) async fn recording(
        mut self,
        origin: &str,
        book: tokio_postgres::Client,
    ) -> Result<Seals> {
        let mine = crate::book::chains::load(&book).await?;
        {
            let mut written = self.written.lock().expect("not poisoned");
            for ((o, target), head) in mine.into_iter().filter(|((o, _), _)| o == origin) {
                written.insert((o, target), head.seq);
            }
        }
        self.book = Some(Arc::new(book));
        Ok(self)
    }

    /// Whether the applier requires signed packets.
    pub fn checks(&self) -> bool {
        !matches!(self.trust, Trust::Unchecked)
    }

    /// Whether this side signs what it writes.
    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// Checks packet `p` and the `parts` the relay handed `me` for it
    /// against its signed header, and that it is the next packet of each of
    /// its chains `me` follows (moving `chains` past it); Err names what
    /// the relay changed.
    pub(crate) fn check(
        &self,
        p: &PacketInfo,
        parts: &[StoredPart],
        me: &Target,
        chains: &mut Chains,
    ) -> std::result::Result<(), String> {
        let keys: &[PublicKey] = match &self.trust {
            Trust::Unchecked => return Ok(()),
            Trust::Ho(keys) => keys,
            Trust::Sites(sites) => match sites.get(p.origin.as_str()) {
                Some(keys) => keys,
                None => {
                    return Err(format!(
                        "packet {} comes from site {} whose public key HO does not hold; record it: relaysync site key {} --public-key FILE",
                        p.id, p.origin, p.origin
                    ))
                }
            },
        };
        let (Some(signed), Some(signature)) = (&p.signed, &p.signature) else {
            return Err(format!(
                "packet {} is not signed, and this side applies signed packets only; if {} signs no packets yet, give it a signing_key",
                p.id, p.origin
            ));
        };
        // The signature first: nothing of the header is read before it
        // verifies.
        let Some(key) = keys.iter().find(|k| k.verifies(signed, signature)) else {
            let ids: Vec<&str> = keys.iter().map(|k| k.id()).collect();
            return Err(format!(
                "packet {} has a signature that no trusted key of {} verifies (trusted: {}); the relay's copy is not what {} signed",
                p.id,
                p.origin,
                ids.join(", "),
                p.origin
            ));
        };
        let header: Header = serde_json::from_slice(signed)
            .map_err(|e| format!("packet {}: its signed header is unreadable ({e})", p.id))?;
        header_matches(&header, key, p, me)?;
        parts_match(&header, parts, p.id, me)?;
        follows(&header, signed, me, chains)
    }
}

/// Whether packet `h` (signed as `signed`) is the next of each chain `me`
/// follows; if so, `chains` move past it.
fn follows(
    h: &Header,
    signed: &[u8],
    me: &Target,
    chains: &mut Chains,
) -> std::result::Result<(), String> {
    let mine = |t: &str| t == me.as_str() || (t == crate::route::ALL_SITES && me != &Target::Ho);
    let links: Vec<&Link> = h.chain.iter().filter(|l| mine(&l.target)).collect();
    if links.is_empty() {
        return Err(format!("packet {} names no place in a chain of {me}", h.id));
    }
    let reset = h.resets.iter().any(|s| s == me.as_str());
    for link in &links {
        let key = (h.origin.clone(), link.target.clone());
        let Some(head) = chains.heads.get(&key) else {
            // Nothing applied in this chain yet (a new applier, or packets
            // signed only from now on): it starts here.
            continue;
        };
        let id = h.id;
        let target = &link.target;
        if link.seq <= head.seq {
            return Err(format!(
                "packet {id} is number {} of the packets for {target}, and {me} applied up to number {} already: the relay replayed it",
                link.seq, head.seq
            ));
        }
        if reset {
            // A full sync supersedes what came before it: a gap before it
            // loses nothing, but it must still be newer than what was
            // applied (an old one replayed would take the site back).
            continue;
        }
        if link.seq > head.seq + 1 {
            return Err(format!(
                "the relay is withholding {} packet(s) for {target} before packet {id} (numbers {} to {}); {me} goes on once the relay delivers them",
                link.seq - head.seq - 1,
                head.seq + 1,
                link.seq - 1
            ));
        }
        if link.prev != hex(&head.hash) {
            return Err(format!(
                "packet {id} does not follow the packet for {target} that {me} applied last: the relay delivered another chain's packet"
            ));
        }
    }
    let hash = crate::relay::checksum(signed);
    for link in links {
        let key = (h.origin.clone(), link.target.clone());
        chains.set(
            key,
            Head {
                seq: link.seq,
                hash: hash.clone(),
            },
        );
    }
    if reset {
        for b in h.base.iter().filter(|b| mine(&b.target)) {
            let hash = unhex(&b.prev).ok_or_else(|| format!("packet {}: a bad base hash", h.id))?;
            chains.set(
                (h.origin.clone(), b.target.clone()),
                Head { seq: b.seq, hash },
            );
        }
    }
    Ok(())
}

/// The bytes of hex `text`.
fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The packet as the relay lists it is the one signed.
fn header_matches(
    h: &Header,
    key: &PublicKey,
    p: &PacketInfo,
    me: &Target,
) -> std::result::Result<(), String> {
    let id = p.id;
    if h.key != key.id {
        return Err(format!(
            "packet {id} names key {} but key {} signed it",
            h.key, key.id
        ));
    }
    if h.id != p.id {
        return Err(format!(
            "packet {id} carries what was signed as packet {}: the relay replayed or reordered it",
            h.id
        ));
    }
    if h.group != p.group_id {
        return Err(format!(
            "packet {id} was signed in group {} but the relay lists it in group {}",
            h.group, p.group_id
        ));
    }
    if h.origin != p.origin.as_str() || h.kind != p.kind.as_str() {
        return Err(format!(
            "packet {id} was signed as a {} packet from {} but the relay lists a {} packet from {}",
            h.kind, h.origin, p.kind, p.origin
        ));
    }
    let for_me = h.targets.iter().any(|t| t == me.as_str())
        || (h.targets.len() == 1 && h.targets[0] == crate::route::ALL_SITES && me != &Target::Ho);
    if !for_me {
        return Err(format!(
            "packet {id} was signed for {} and not for {me}: the relay delivered another's packet",
            h.targets.join(", ")
        ));
    }
    Ok(())
}

/// The parts handed to `me` are exactly the signed parts for `me` (its own
/// and those for every site), in order, with the bytes signed.
fn parts_match(
    h: &Header,
    parts: &[StoredPart],
    id: i64,
    me: &Target,
) -> std::result::Result<(), String> {
    let signed: Vec<&PartSeal> = h
        .parts
        .iter()
        .filter(|s| s.target == me.as_str() || s.target == crate::route::ALL_SITES)
        .collect();
    if signed.len() != parts.len() {
        return Err(format!(
            "packet {id} was signed with {} part(s) for {me} but the relay handed {}",
            signed.len(),
            parts.len()
        ));
    }
    for (s, part) in signed.iter().zip(parts) {
        let same = s.seq == part.seq
            && s.table == part.table_name
            && s.target == part.target
            && s.rows == part.row_count
            && s.sha256 == hex(&crate::relay::checksum(&part.arrow_ipc));
        if !same {
            return Err(format!(
                "part {} of packet {id} ({}) is not the part signed: the relay's copy was changed",
                s.seq, s.table
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let dir = std::env::temp_dir().join(format!("seal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("ho.pem");
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(dir.join("ho.pem.pub"));
        let made = generate(&out, false).unwrap();
        assert!(generate(&out, false).is_err(), "an existing key is kept");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let key = SigningKey::load("signing_key", &out).unwrap();
        let public = PublicKey::load_all("trust", &made.public_key).unwrap();
        assert_eq!(public, vec![key.public()]);
        assert_eq!(key.id(), made.id);
        let (signed, signature) = key.seal(&Header {
            key: key.id().into(),
            id: 7,
            group: 7,
            origin: "ho".into(),
            kind: "delta".into(),
            targets: vec!["s1".into()],
            created_at: 0,
            parts: vec![],
            chain: vec![],
            resets: vec![],
            base: vec![],
        });
        assert!(public[0].verifies(&signed, &signature));
        let mut altered = signed.clone();
        altered[10] ^= 1;
        assert!(!public[0].verifies(&altered, &signature));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
