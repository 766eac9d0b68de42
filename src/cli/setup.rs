//! `setup relay|ho|pos`.

use relaysync::config::Config;
use relaysync::error::Result;

use super::SetupTarget;

/// Creates or checks what relaysync needs in one database.
pub async fn run(cfg: &Config, target: SetupTarget) -> Result<()> {
    match target {
        SetupTarget::Relay => {
            let mut client = relaysync::postgres::connect("relay", &cfg.relay()?.url).await?;
            relaysync::relay::migrate(&mut client).await?;
            println!("relay schema is ready");
        }
        SetupTarget::Ho => {
            for line in relaysync::ho::setup(cfg).await? {
                println!("ho: {line}");
            }
        }
        SetupTarget::Pos => {
            for line in relaysync::pos::setup(cfg).await? {
                println!("pos: {line}");
            }
        }
    }
    Ok(())
}
