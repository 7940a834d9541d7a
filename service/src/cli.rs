//! The command line: `serve` (the default), `migrate`, and `clients create|list|disable`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::AppState;
use crate::auth::Scope;
use crate::config::Settings;
use crate::crypto;
use crate::store::{self, clients};

#[derive(Debug, Parser)]
#[command(
    name = "kyc-service",
    version,
    about = "KYC backend: tokens, KYC requests, PostgreSQL and Redis"
)]
pub struct Cli {
    /// The configuration file; every key can be overridden with KYC__SECTION__KEY.
    #[arg(long, short, default_value = "config.yaml", global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Create a client; its secret is printed once and stored only as an argon2id hash.
    Create {
        /// The client id: 3-64 of A-Z a-z 0-9 . _ -
        #[arg(long)]
        id: String,
        /// Space-separated scopes: kyc:read kyc:write kyc:pii
        #[arg(long, default_value = "kyc:read kyc:write")]
        scopes: String,
        /// A human-readable name.
        #[arg(long, default_value = "")]
        name: String,
        /// Use this secret instead of generating one (at least 16 characters).
        #[arg(long)]
        secret: Option<String>,
    },
    /// List clients (secrets are never shown).
    List,
    /// Disable a client and revoke its refresh tokens.
    Disable {
        #[arg(long)]
        id: String,
    },
}

/// Runs a `migrate` or `clients` command against the configured database.
///
/// # Errors
/// A message for the operator, printed as one line.
pub async fn run(settings: Settings, command: Command) -> Result<(), String> {
    let state = AppState::new(settings).map_err(|e| e.to_string())?;
    store::migrate(&state.db)
        .await
        .map_err(|e| format!("migrations failed: {e}"))?;
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::Migrate => {
            let applied = store::health(&state.db)
                .await
                .map_err(|e| e.to_string())?
                .applied_version;
            println!(
                "migrations applied; schema version {}",
                applied.unwrap_or(0)
            );
        }
        Command::Clients(ClientsCommand::Create {
            id,
            scopes,
            name,
            secret,
        }) => {
            let scopes = Scope::parse_list(&scopes)
                .map_err(|s| format!("unknown scope {s:?}; use kyc:read, kyc:write, kyc:pii"))?;
            if scopes.is_empty() {
                return Err("at least one scope is required".into());
            }
            let valid_id = (3..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_id {
                return Err("the client id must be 3-64 characters of A-Z a-z 0-9 . _ -".into());
            }
            let secret = match secret {
                Some(s) if s.len() < 16 => {
                    return Err("the secret must be at least 16 characters".into());
                }
                Some(s) => s,
                None => crypto::random_hex(24),
            };
            let hash = crypto::hash_secret(&secret).map_err(|e| e.to_string())?;
            let names: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
            clients::create(&state.db, &id, &name, &hash, &names)
                .await
                .map_err(|e| match e {
                    crate::kyc::ports::StoreError::Conflict => {
                        format!("a client with id {id:?} already exists")
                    }
                    other => other.to_string(),
                })?;
            println!(
                "created client {id} with scopes \"{}\"",
                Scope::join(&scopes)
            );
            println!("client_secret: {secret}");
            println!("(the secret is shown only now; store it safely)");
        }
        Command::Clients(ClientsCommand::List) => {
            let all = clients::list(&state.db).await.map_err(|e| e.to_string())?;
            println!(
                "{:<24} {:<28} {:<9} {:<20} NAME",
                "CLIENT_ID", "SCOPES", "STATUS", "CREATED"
            );
            for c in all {
                println!(
                    "{:<24} {:<28} {:<9} {:<20} {}",
                    c.client_id,
                    c.scopes.join(" "),
                    if c.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    },
                    c.created_at.format("%Y-%m-%d %H:%M:%S"),
                    c.display_name
                );
            }
        }
        Command::Clients(ClientsCommand::Disable { id }) => {
            if clients::disable(&state.db, &id)
                .await
                .map_err(|e| e.to_string())?
            {
                println!(
                    "disabled client {id}; its refresh tokens are revoked and its access tokens stop working within 10 s"
                );
            } else {
                return Err(format!("no client with id {id:?}"));
            }
        }
    }
    Ok(())
}
