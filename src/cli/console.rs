//! `console`: serve the web console, or manage its users.

use std::net::SocketAddr;

use relaysync::book::Side;
use relaysync::config::Config;
use relaysync::console::{self, Console, Options, Role, Users};
use relaysync::error::{Error, Result};
use relaysync::postgres::read_password_file;

use super::{json, ConsoleCommand, ConsoleUserCommand};

pub async fn run(
    cfg: &Config,
    listen: Option<SocketAddr>,
    pos: bool,
    command: Option<ConsoleCommand>,
    as_json: bool,
) -> Result<()> {
    let users = || {
        Users::new(
            cfg.console
                .users
                .clone()
                .unwrap_or_else(|| console::DEFAULT_USERS.into()),
        )
    };
    match command {
        Some(ConsoleCommand::User(ConsoleUserCommand::Add {
            name,
            role,
            password_file,
        })) => {
            let role: Role = role.parse()?;
            let password = match password_file {
                Some(file) => read_password_file("--password-file", &file)?,
                None => read_stdin_password()?,
            };
            let added = users().add(&name, role, &password)?;
            if as_json {
                json::print(&added);
            } else {
                println!(
                    "console user {} ({}) {} in {}",
                    added.name,
                    added.role.as_str(),
                    if added.replaced { "updated" } else { "added" },
                    added.file.display()
                );
            }
            Ok(())
        }
        Some(ConsoleCommand::User(ConsoleUserCommand::Remove { name })) => {
            let users = users();
            if !users.remove(&name)? {
                return Err(Error::Config(format!(
                    "console user {name} is not in {}",
                    users.path().display()
                )));
            }
            if as_json {
                json::print(&serde_json::json!({ "removed": name }));
            } else {
                println!("console user {name} removed");
            }
            Ok(())
        }
        None => {
            let side = if pos { Side::Site } else { Side::Ho };
            let opts = Options::from_config(cfg, side, listen)?;
            let shutdown = relaysync::shutdown::on_signals();
            let stop = async move {
                let mut shutdown = shutdown;
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            let console = Console::bind(cfg.clone(), opts).await?;
            let url = console.url()?;
            if as_json {
                json::print(&serde_json::json!({ "console": url }));
            } else {
                println!("console listening on {url}");
            }
            console.run(stop).await;
            Ok(())
        }
    }
}

/// The password from stdin's first line (e.g. `… < file`, or typed).
fn read_stdin_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|source| Error::Io {
            context: "reading the password from stdin".into(),
            source,
        })?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(Error::Config(
            "no password given: pass --password-file FILE or write it on stdin".into(),
        ));
    }
    Ok(password)
}
