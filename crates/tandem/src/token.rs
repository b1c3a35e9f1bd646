//! `tandem token`: mints an HS256 token with the server's secret (the same
//! signing code the tests use) and, with `--url`, prints a ready editor link.

use std::time::Duration;

use anyhow::{Context, bail};
use tandem_gateway::auth::claims::{parse_mode, unix_now};
use tandem_gateway::auth::{Claims, Scope, SecretArgs, mint_hs256};
use tandem_store::DocId;

/// `tandem token --doc ID|--prefix P --mode M --ttl 1h [--sub NAME] [--url http://host]`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("scope").required(true).multiple(true))]
pub struct TokenArgs {
    /// A document the token admits (repeatable).
    #[arg(long = "doc", group = "scope")]
    docs: Vec<String>,
    /// Admit every document whose id starts with P (`team-a.` gives `team-a.*`;
    /// `--prefix ''` gives `*`, every document). Repeatable.
    #[arg(long = "prefix", group = "scope")]
    prefixes: Vec<String>,
    /// What the holder may do: read, write or admin.
    #[arg(long, value_parser = ["read", "write", "admin"])]
    mode: String,
    /// How long the token is valid (`90s`, `30m`, `1h`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Who the token is for (shown in the server's logs).
    #[arg(long, default_value = "tandem-token")]
    sub: String,
    /// Also print an editor link on this server (`http://host:8080`), for the
    /// first `--doc`.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Prints the token (and the link) on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let Some(secret) = args.secret.load()? else {
        bail!(
            "tandem token needs the server's secret: --auth-secret-file FILE, --auth-secret or TANDEM_AUTH_SECRET"
        );
    };
    for doc in &args.docs {
        DocId::new(doc.clone())?;
    }
    let patterns = args
        .docs
        .iter()
        .cloned()
        .chain(args.prefixes.iter().map(|p| format!("{p}*")))
        .collect();
    let docs = Scope::new(patterns).map_err(anyhow::Error::msg)?;
    let now = unix_now();
    let claims = Claims {
        sub: args.sub,
        docs,
        mode: parse_mode(&args.mode).context("--mode")?,
        exp: now + args.ttl.as_secs().max(1),
        nbf: None,
        iat: Some(now),
        jti: Some(uuid::Uuid::new_v4().to_string()),
    };
    let token = mint_hs256(&secret, &claims)?;
    println!("{token}");
    if let Some(url) = args.url {
        match args.docs.first() {
            Some(doc) => println!("{}/d/{doc}?token={token}", url.trim_end_matches('/')),
            None => {
                eprintln!("--url: no --doc to link to (a --prefix token admits many documents)")
            }
        }
    }
    Ok(())
}
