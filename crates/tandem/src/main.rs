//! The `tandem` binary: `tandem serve` runs the collaborative editing
//! server; `list`, `export`, `import` and `compact` are operator tools that
//! work directly on a data directory (stop the server first, or use the
//! HTTP API while it runs: sled allows one process per data directory).
//!
//! Modules: [`serve`] (the server's `Config` and startup), [`ops`] (the
//! operator subcommands), [`token`] (`tandem token`: mint an access token),
//! [`store_args`] (flags shared by every command that opens the store).

mod ops;
mod serve;
mod store_args;
mod token;

use clap::{Parser, Subcommand};

/// Tandem: a collaborative document editing server speaking the Yjs protocol.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: WebSocket rooms at /ws/<doc-id>, HTTP API, web editor.
    Serve(Box<serve::Config>),
    /// List stored documents.
    List(ops::ListArgs),
    /// Export one document as text, JSON or a binary Yjs update (`--lossy`:
    /// recover a damaged one).
    Export(ops::ExportArgs),
    /// Merge a binary Yjs update (v1) file into a document.
    Import(ops::ImportArgs),
    /// Compact one document, or every document.
    Compact(ops::CompactArgs),
    /// Mint an access token (HS256, the server's secret) and optionally an editor link.
    Token(token::TokenArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve::run(*config),
        Command::List(args) => ops::list(args),
        Command::Export(args) => ops::export(args),
        Command::Import(args) => ops::import(args),
        Command::Compact(args) => ops::compact(args),
        Command::Token(args) => token::run(args),
    }
}
